// Echo load generator: `loadgen --port P --connections N --size S --warmup W --duration D`.
// N connections to 127.0.0.1:P each ping-pong one S-byte message at a time and check every
// echoed byte. It prints MEASURE START after the warm-up and MEASURE END after the measured
// window, so a driver can sample the server's CPU time exactly around it, then one
// `LOADGEN {json}` line. Single-threaded raw epoll, so the client's own overhead stays small.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

namespace {

using u64 = std::uint64_t;

u64 nowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return u64(ts.tv_sec) * 1'000'000'000 + u64(ts.tv_nsec);
}

// Log-linear buckets (64 per power of two): under 1.6% error at any scale, fixed memory.
class Histogram {
public:
  void add(u64 ns) {
    ++counts_[index(ns)];
    ++total_;
  }
  double percentileUs(double p) const {
    if (total_ == 0) return 0;
    const u64 rank = u64(p / 100.0 * double(total_ - 1)) + 1;
    u64 seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return double(lowerBound(i) + lowerBound(i + 1)) / 2 / 1000.0;
    }
    return 0;
  }

private:
  static constexpr int kSubBits = 6;
  static constexpr std::size_t kBuckets = 64 * 64;
  static std::size_t index(u64 v) {
    if (v < (2u << kSubBits)) return v;
    const int shift = std::bit_width(v) - 1 - kSubBits;
    return std::size_t(shift) * (1u << kSubBits) + (v >> shift);
  }
  static u64 lowerBound(std::size_t i) {
    if (i < (2u << kSubBits)) return i;
    const std::size_t shift = i / (1u << kSubBits) - 1;
    return u64(i - shift * (1u << kSubBits)) << shift;
  }
  std::vector<u64> counts_ = std::vector<u64>(kBuckets);
  u64 total_ = 0;
};

struct Options {
  int port = 0;
  int connections = 1;
  std::size_t size = 64;
  double warmup = 1;
  double duration = 3;
};

struct Conn {
  int fd = -1;
  bool connected = false;
  bool echoedOnce = false; // the server has accepted and served it at least once
  std::vector<unsigned char> sent;
  std::size_t written = 0;
  std::size_t received = 0;
  u64 seed = 0;
  u64 startNs = 0;
};

enum class Phase { Connect, Warmup, Measure, Done };

class LoadGen {
public:
  explicit LoadGen(const Options& o) : opt_(o), conns_(std::size_t(o.connections)) {}

  int run();

private:
  void openAll();
  void fail(Conn& c, const char* what);
  void nextMessage(Conn& c);
  void flush(Conn& c);
  void drain(Conn& c);
  void onEvent(Conn& c, std::uint32_t events);
  void advancePhase(u64 now);
  int report() const;

  Options opt_;
  std::vector<Conn> conns_;
  std::vector<unsigned char> scratch_ = std::vector<unsigned char>(65536);
  int ep_ = -1;
  int live_ = 0;
  Phase phase_ = Phase::Connect;
  u64 phaseEndNs_ = 0;
  u64 measureStartNs_ = 0;
  u64 measureEndNs_ = 0;
  u64 roundtrips_ = 0;
  u64 errors_ = 0;
  Histogram latency_;
};

// Each message gets fresh bytes so a server that echoes stale data is caught.
void LoadGen::nextMessage(Conn& c) {
  u64 x = c.seed = c.seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (std::size_t i = 0; i < c.sent.size(); ++i) {
    if (i % 8 == 0) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
    }
    c.sent[i] = static_cast<unsigned char>(x >> (8 * (i % 8)));
  }
  c.written = c.received = 0;
  c.startNs = nowNs();
  flush(c);
}

void LoadGen::fail(Conn& c, const char* what) {
  if (c.fd < 0) return;
  std::fprintf(stderr, "loadgen: connection %zu: %s\n", std::size_t(&c - conns_.data()), what);
  ++errors_;
  close(c.fd);
  c.fd = -1;
  --live_;
}

void LoadGen::flush(Conn& c) {
  while (c.fd >= 0 && c.written < c.sent.size()) {
    const ssize_t n =
        send(c.fd, c.sent.data() + c.written, c.sent.size() - c.written, MSG_NOSIGNAL);
    if (n > 0) {
      c.written += std::size_t(n);
    } else if (errno == EAGAIN) {
      return; // edge-triggered EPOLLOUT tells us when to go on
    } else if (errno != EINTR) {
      fail(c, std::strerror(errno));
    }
  }
}

void LoadGen::drain(Conn& c) {
  while (c.fd >= 0) {
    const ssize_t n = recv(c.fd, scratch_.data(), scratch_.size(), 0);
    if (n == 0) return fail(c, "closed by the server");
    if (n < 0) {
      if (errno == EAGAIN) return;
      if (errno != EINTR) fail(c, std::strerror(errno));
      continue;
    }
    if (c.received + std::size_t(n) > c.written ||
        std::memcmp(scratch_.data(), c.sent.data() + c.received, std::size_t(n)) != 0)
      return fail(c, "echoed bytes differ from the bytes sent");
    c.received += std::size_t(n);
    if (c.received < c.sent.size()) continue;
    const u64 end = nowNs();
    if (phase_ == Phase::Measure && end < measureEndNs_) {
      ++roundtrips_;
      latency_.add(end - c.startNs);
    }
    c.echoedOnce = true;
    nextMessage(c);
  }
}

void LoadGen::onEvent(Conn& c, std::uint32_t events) {
  if (c.fd < 0) return; // failed earlier in this batch of events
  if (!c.connected) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return fail(c, std::strerror(err));
    if (!(events & EPOLLOUT)) return; // still connecting
    c.connected = true;
    nextMessage(c);
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) drain(c);
  if (events & EPOLLOUT) flush(c);
}

void LoadGen::openAll() {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(std::uint16_t(opt_.port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (std::size_t i = 0; i < conns_.size(); ++i) {
    Conn& c = conns_[i];
    c.sent.resize(opt_.size);
    c.seed = 0x9E3779B97F4A7C15ULL * (i + 1);
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) {
      std::fprintf(stderr, "loadgen: socket: %s\n", std::strerror(errno));
      ++errors_;
      continue;
    }
    ++live_;
    const int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 &&
        errno != EINPROGRESS) {
      fail(c, std::strerror(errno));
      continue;
    }
    // Edge-triggered and registered once: the client makes no epoll_ctl calls while measuring.
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
    ev.data.u64 = i;
    epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev);
  }
}

// The warm-up starts once every connection has been echoed once (or after 10 s), so slow
// accepts of 1000 connections do not eat into it.
void LoadGen::advancePhase(u64 now) {
  const auto secs = [](double s) { return u64(s * 1e9); };
  const auto served = [](const Conn& c) { return c.fd < 0 || c.echoedOnce; };
  if (phase_ == Phase::Connect &&
      (std::all_of(conns_.begin(), conns_.end(), served) || now >= phaseEndNs_)) {
    for (Conn& c : conns_)
      if (!c.echoedOnce) fail(c, "not served within 10 s of connecting");
    phase_ = Phase::Warmup;
    phaseEndNs_ = now + secs(opt_.warmup);
  }
  if (phase_ == Phase::Warmup && now >= phaseEndNs_) {
    phase_ = Phase::Measure;
    measureStartNs_ = now;
    measureEndNs_ = phaseEndNs_ = now + secs(opt_.duration);
    std::printf("MEASURE START\n");
    std::fflush(stdout);
  }
  if (phase_ == Phase::Measure && now >= phaseEndNs_) {
    phase_ = Phase::Done;
    measureEndNs_ = now;
    std::printf("MEASURE END\n");
    std::fflush(stdout);
  }
}

int LoadGen::run() {
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  phaseEndNs_ = nowNs() + 10'000'000'000ULL;
  openAll();
  std::vector<epoll_event> events(1024);
  while (phase_ != Phase::Done && live_ > 0) {
    const u64 now = nowNs();
    advancePhase(now);
    if (phase_ == Phase::Done) break;
    const int timeoutMs = phaseEndNs_ > now ? int((phaseEndNs_ - now) / 1'000'000) + 1 : 0;
    const int n = epoll_wait(ep_, events.data(), int(events.size()), timeoutMs);
    for (int i = 0; i < n; ++i)
      onEvent(conns_[events[i].data.u64], events[i].events);
  }
  if (phase_ == Phase::Measure) measureEndNs_ = nowNs(); // every connection died early
  return report();
}

int LoadGen::report() const {
  const double secs =
      measureEndNs_ > measureStartNs_ ? double(measureEndNs_ - measureStartNs_) / 1e9 : 0;
  std::printf("LOADGEN {\"connections\":%d,\"size\":%zu,\"seconds\":%.3f,\"roundtrips\":%llu,"
              "\"roundtrips_per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"errors\":%llu}\n",
              opt_.connections, opt_.size, secs, static_cast<unsigned long long>(roundtrips_),
              secs > 0 ? double(roundtrips_) / secs : 0.0, latency_.percentileUs(50),
              latency_.percentileUs(99), static_cast<unsigned long long>(errors_));
  std::fflush(stdout);
  return errors_ == 0 ? 0 : 1;
}

[[noreturn]] void usage() {
  std::fprintf(stderr, "usage: loadgen --port P --connections N --size S --warmup W "
                       "--duration D\n");
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--port")
      o.port = std::atoi(value);
    else if (flag == "--connections")
      o.connections = std::atoi(value);
    else if (flag == "--size")
      o.size = std::size_t(std::atol(value));
    else if (flag == "--warmup")
      o.warmup = std::atof(value);
    else if (flag == "--duration")
      o.duration = std::atof(value);
    else
      usage();
  }
  if (argc % 2 == 0 || o.port <= 0 || o.port > 65535 || o.connections <= 0 || o.size == 0 ||
      o.warmup < 0 || o.duration <= 0)
    usage();
  return o;
}

} // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  // 1000 connections need more descriptors than the usual soft limit of 1024 allows.
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  return LoadGen(opt).run();
}
