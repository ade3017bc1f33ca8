// The soak test (`make soak`, `build/bin/soak --seconds N [--connections N] [--seed N]`): an echo
// server on one thread's dispatcher and 1,000 client connections on another's, over 127.0.0.1,
// for N seconds (60 by default). Each client sends messages of random sizes up to 1 MiB (most
// small, some large) and checks that every byte comes back in order; clients randomly disconnect
// cleanly or reset (SO_LINGER {1, 0}, which sends RST), in the middle of a message or between two,
// and reconnect. At the end the clients stop, the server closes its side of every connection, both
// dispatchers drain, the threads are joined, and the program fails (exit 1, saying why) on a lost
// byte, an operation still pending, a descriptor more or fewer than at the start, or memory
// growth beyond the tolerance below. Its last line is the figures, key=value.
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include <asyncdispatch.hpp>

using namespace asyncdispatch;

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxMessage = std::size_t{1} << 20; // the largest message: 1 MiB
// What a client writes or reads per call: large enough that a 1 MiB message takes 64 calls,
// small enough that 1,000 connections' buffers stay at 32 MiB.
constexpr std::size_t kChunk = 16 * 1024;
constexpr const char* kHost = "127.0.0.1";

// The stop waits for each connection to finish its message and for the server to close its
// side, and the warm-up for every connection's first echo: bounded, so that a lost wake-up fails
// the run instead of hanging it.
constexpr auto kStopLimit = std::chrono::seconds(60);
constexpr auto kWarmupLimit = std::chrono::seconds(120);
constexpr int kDrainMs = 10000;
constexpr auto kProgressEvery = std::chrono::seconds(10);

// RSS may grow by this much from the warm-up before it counts as a leak. After the warm-up every
// buffer, frame and table of the steady state exists; what still moves is the allocator's peak,
// as the number of messages in flight varies: each thread's glibc arena keeps what it freed (a
// non-main arena is trimmed only from its top), and the server's recv strings take up to 128 KiB
// each. 5% follows the heap's size (ASan's allocator moved by 7 MiB of its 415 here); 8 MiB holds
// 64 more of those strings than at the warm-up. Measured without a sanitizer, RSS under load
// stayed within 0.4 MiB of the warm-up figure, with 1,000 and with 3,000 connections, while a
// leak of 16 KiB per reconnect (1,500 to 3,000 reconnects a minute here) exceeds the tolerance
// within a minute.
constexpr std::int64_t kRssSlackBytes = 8 * 1024 * 1024;
constexpr std::int64_t kRssSlackDivisor = 20;

// splitmix64's finaliser: a good 64-bit mix, used both as the clients' dice and to make message
// bytes.
constexpr std::uint64_t kGamma = 0x9e3779b97f4a7c15ull;
std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// A connection's dice (splitmix64).
class Rng {
public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() { return mix(state_ += kGamma); }
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

private:
  std::uint64_t state_;
};

// The bytes of a message are a function of its seed and their offset, so the writer makes each
// chunk as it sends it and the reader makes the expected bytes as they arrive: no connection
// keeps a 1 MiB copy of what it sent, yet every byte is compared exactly.
void fillMessage(std::uint64_t seed, std::size_t offset, char* out, std::size_t n) {
  std::size_t i = 0;
  while (i < n) {
    const std::size_t pos = offset + i;
    const std::uint64_t word = mix(seed + (pos / 8 + 1) * kGamma);
    const std::size_t inWord = pos % 8;
    const std::size_t take = std::min<std::size_t>(8 - inWord, n - i);
    std::memcpy(out + i, reinterpret_cast<const char*>(&word) + inWord, take);
    i += take;
  }
}

// A running Fletcher-style checksum (two 64-bit sums): it depends on the order of the bytes, not
// on how they were split into calls, so what was sent and what came back sum alike unless a byte
// was lost, added, changed or moved.
struct Checksum {
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  void add(const char* data, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      a += static_cast<unsigned char>(data[i]);
      b += a;
    }
  }
  bool operator==(const Checksum&) const = default;
};

// How many descriptors the process has open (/proc/self/fd, less the one reading it).
long countFds() {
  const std::unique_ptr<DIR, int (*)(DIR*)> dir(opendir("/proc/self/fd"), closedir);
  if (!dir) return -1;
  long n = 0;
  while (const dirent* entry = readdir(dir.get())) {
    if (entry->d_name[0] == '.') continue;
    if (std::atoi(entry->d_name) != dirfd(dir.get())) ++n;
  }
  return n;
}

// The resident set in bytes (/proc/self/statm's second field is in pages).
std::int64_t residentBytes() {
  std::ifstream statm("/proc/self/statm");
  std::int64_t size = 0;
  std::int64_t resident = 0;
  statm >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

double mib(std::int64_t bytes) {
  return static_cast<double>(bytes) / (1024.0 * 1024.0);
}

// Unexpected failures (anything but the disconnects the test makes on purpose): counted, and the
// first few kept to be printed, since the run fails on any.
class Errors {
public:
  void add(const std::string& what) {
    const std::lock_guard<std::mutex> locked(lock_);
    ++count_;
    if (first_.size() < 10) first_.push_back(what);
  }
  std::uint64_t count() {
    const std::lock_guard<std::mutex> locked(lock_);
    return count_;
  }
  std::vector<std::string> first() {
    const std::lock_guard<std::mutex> locked(lock_);
    return first_;
  }

private:
  std::mutex lock_;
  std::uint64_t count_ = 0;
  std::vector<std::string> first_;
};

// The figures, written by the two threads and read by the main thread's progress lines.
struct Stats {
  std::atomic<std::uint64_t> bytesEchoed{0};
  std::atomic<std::uint64_t> messages{0};
  std::atomic<std::uint64_t> connects{0};
  std::atomic<std::uint64_t> disconnects{0};
  std::atomic<std::uint64_t> resets{0};
  std::atomic<std::uint64_t> lost{0};
  std::atomic<std::uint64_t> warmed{0}; // connections whose first message came back
  std::atomic<std::int64_t> clientOpen{0};
  std::atomic<std::int64_t> serverOpen{0};
  std::atomic<std::uint64_t> accepted{0};
  Errors errors;
};

void bump(std::atomic<std::uint64_t>& counter, std::uint64_t n = 1) {
  counter.fetch_add(n, std::memory_order_relaxed);
}

// What a thread leaves for the main thread once joined.
struct ThreadReport {
  std::uint64_t pending = 0; // armed descriptors, live timers, queued callbacks, suspended frames
  std::uint64_t registered = 0; // descriptors the selector still holds, armed or not
  std::int64_t liveCoroutines = 0;
};

// What is still waiting on this thread's dispatcher: Nim's hasPendingOperations counts armed
// descriptors, timers and callbacks; a coroutine suspended on a future nobody will finish counts
// for none of them, so the suspended frames are added.
void measurePending(ThreadReport& report) {
  const PDispatcher p = getGlobalDispatcher();
  const std::uint64_t timers = p->timers.size() - p->cancelledTimers;
  report.pending = static_cast<std::uint64_t>(activeDescriptors()) + timers + p->callbacks.size() +
                   p->suspended.size();
  for (const auto& key : p->selector.fds)
    report.registered += key.fd != InvalidIdent ? 1 : 0;
}

// Counts the coroutines of one kind that are running, so the end can tell whether all returned.
class Live {
public:
  explicit Live(std::int64_t& count) : count_(count) { ++count_; }
  Live(const Live&) = delete;
  Live& operator=(const Live&) = delete;
  ~Live() { --count_; }

private:
  std::int64_t& count_;
};

struct Server {
  explicit Server(Stats& st) : stats(st) {}
  Stats& stats;
  AsyncFD listener{-1};
  bool stopping = false;
  std::unordered_set<AsyncFD> open; // accepted and not yet closed: the stop closes what is left
  std::int64_t live = 0;
};

void serverError(Server& s, AsyncFD fd, const char* op, const std::exception& e) {
  s.stats.errors.add(std::string("server ") + op + " (fd " + std::to_string(static_cast<int>(fd)) +
                     "): " + e.what());
}

// Closes the server's side once: a connection is closed by its echo coroutine, or by the stop.
void closeServerSide(Server& s, AsyncFD fd) {
  if (s.open.erase(fd) == 0) return;
  s.stats.serverOpen.fetch_sub(1, std::memory_order_relaxed);
  closeSocket(fd);
}

// The echo over the caller's buffer (recvInto, send of a pointer): no allocation per message.
Future<void> echoInto(Server& s, AsyncFD fd) {
  const Live live(s.live);
  char buffer[kChunk];
  try {
    for (;;) {
      const int n = co_await recvInto(fd, buffer, sizeof buffer);
      if (n == 0) break; // the client closed or reset (SafeDisconn turns the reset into 0)
      co_await send(fd, buffer, n);
    }
  } catch (const OSError& e) {
    if (!s.stopping) serverError(s, fd, "recvInto/send", e);
  }
  closeServerSide(s, fd);
}

// The echo over strings (recv, send of a string that the operation owns), with a recv size that
// is either within the library's 64 KiB scratch buffer or above it (a buffer per call).
Future<void> echoStrings(Server& s, AsyncFD fd, int size) {
  const Live live(s.live);
  try {
    for (;;) {
      std::string data = co_await recv(fd, size);
      if (data.empty()) break;
      co_await send(fd, std::move(data));
    }
  } catch (const OSError& e) {
    if (!s.stopping) serverError(s, fd, "recv/send", e);
  }
  closeServerSide(s, fd);
}

Future<void> serve(Server& s) {
  const Live live(s.live);
  for (std::uint64_t n = 0;; ++n) {
    AsyncFD client{-1};
    try {
      client = co_await accept(s.listener);
    } catch (const OSError& e) {
      if (!s.stopping) serverError(s, s.listener, "accept", e);
      co_return; // the stop closed the listener
    }
    if (s.stopping) { // accepted in the pass that stopped the server, after the stop ran
      closeSocket(client);
      co_return;
    }
    setSockOptInt(client, IPPROTO_TCP, TCP_NODELAY, 1);
    s.open.insert(client);
    s.stats.serverOpen.fetch_add(1, std::memory_order_relaxed);
    bump(s.stats.accepted);
    // The three ways to echo take turns, so each library path sees resets and disconnects.
    switch (n % 3) {
    case 0:
      asyncCheck(echoInto(s, client));
      break;
    case 1:
      asyncCheck(echoStrings(s, client, 65536));
      break;
    default:
      asyncCheck(echoStrings(s, client, 128 * 1024));
      break;
    }
  }
}

void runServer(Stats& stats, AsyncEvent stop, std::promise<Port>& started, ThreadReport& report) {
  Server s(stats);
  try {
    s.listener = createAsyncNativeSocket();
    setSockOptInt(s.listener, SOL_SOCKET, SO_REUSEADDR, 1);
    bindAddr(s.listener, Port(0), kHost);
    listen(s.listener);
    addEvent(stop, [&s](AsyncFD) {
      s.stopping = true;
      closeSocket(s.listener); // fails the pending accept: serve returns
      return true;
    });
    started.set_value(getLocalAddr(s.listener).second);
  } catch (...) {
    started.set_exception(std::current_exception());
    return;
  }
  try {
    asyncCheck(serve(s));
    while (!s.stopping)
      poll(500);
    // The clients have closed every connection by now; the server closes its side as it reads
    // each end of stream. Whatever is still open after the limit is a leak.
    const Clock::time_point limit = Clock::now() + kStopLimit;
    while (!s.open.empty() && Clock::now() < limit)
      poll(100);
    if (!s.open.empty()) {
      stats.errors.add("server: " + std::to_string(s.open.size()) +
                       " connections still open after the clients closed theirs");
      for (const AsyncFD fd : std::vector<AsyncFD>(s.open.begin(), s.open.end()))
        closeServerSide(s, fd);
    }
    drain(kDrainMs);
    measurePending(report);
  } catch (const std::exception& e) {
    stats.errors.add(std::string("server thread: ") + e.what());
  }
  report.liveCoroutines = s.live;
  // Frames still suspended refer to `s`: they go now, not at thread exit after `s` is gone.
  getGlobalDispatcher()->suspended.destroyAll();
  close(stop); // the thread that watched it closes it, so the main thread never needs a dispatcher
}

// One client connection, reconnected after each disconnect; its buffers live here rather than
// in coroutine frames, so the writer and the reader of a message share the connection's state.
struct Conn {
  explicit Conn(std::uint64_t seed) : rng(seed) {}
  Rng rng;
  AsyncFD fd{-1};
  bool open = false; // fd is this connection's to use and close
  bool echoedOnce = false;
  Checksum sent;     // of every byte written on the current socket
  Checksum received; // of every byte read back on it
  std::array<char, kChunk> out{};
  std::array<char, kChunk> in{};
};

struct Clients {
  Clients(Stats& st, Port p) : stats(st), port(p) {}
  Stats& stats;
  Port port;
  bool stopping = false;
  std::vector<std::unique_ptr<Conn>> conns;
  std::array<char, kChunk> expected{}; // filled and compared without a suspension in between
  std::int64_t live = 0;
};

void clientError(Clients& c, const Conn& conn, const std::string& what) {
  c.stats.errors.add("client (fd " + std::to_string(static_cast<int>(conn.fd)) + "): " + what);
}

// Closes the client's socket; with reset, SO_LINGER {1, 0} makes the close send RST.
void closeConn(Clients& c, Conn& conn, bool reset) {
  if (!conn.open) return;
  conn.open = false;
  if (reset) {
    const linger abortive{1, 0};
    if (::setsockopt(static_cast<int>(conn.fd), SOL_SOCKET, SO_LINGER, &abortive,
                     sizeof abortive) != 0)
      clientError(c, conn, std::string("setsockopt(SO_LINGER): ") + std::strerror(errno));
  }
  c.stats.clientOpen.fetch_sub(1, std::memory_order_relaxed);
  closeSocket(conn.fd); // fails the writer's pending send, if any
}

// What a message does to its connection, drawn when it starts: 2% of the messages end theirs,
// a few thousand reconnects a minute, without filling the port range with TIME_WAIT. An abort
// by close, unlike one by reset, lets the kernel choose: with unread data it sends RST too.
enum class Plan { Keep, AbortClose, AbortReset, ThenClose, ThenShutdown, ThenReset };

Plan drawPlan(Rng& rng) {
  const std::uint64_t roll = rng.next() % 10000;
  if (roll < 40) return Plan::AbortClose;
  if (roll < 80) return Plan::AbortReset;
  if (roll < 120) return Plan::ThenClose;
  if (roll < 160) return Plan::ThenShutdown;
  if (roll < 200) return Plan::ThenReset;
  return Plan::Keep;
}

// Sizes from 1 byte to 1 MiB, uniform in their logarithm: half the messages are below 1 KiB, one
// in ten above 256 KiB; one in 256 is exactly 1 MiB, so the largest size is always tried.
std::size_t drawSize(Rng& rng) {
  if (rng.next() % 256 == 0) return kMaxMessage;
  const double size = std::exp2(rng.unit() * 20.0);
  return std::clamp<std::size_t>(static_cast<std::size_t>(size), 1, kMaxMessage);
}

// Sends one message in chunks made from its seed. It stops early, without touching fd again,
// once the reader has closed the connection (on purpose, or on a failure).
Future<void> writeMessage(Clients& c, Conn& conn, std::uint64_t seed, std::size_t size) {
  for (std::size_t offset = 0; offset < size;) {
    if (!conn.open) co_return;
    const std::size_t n = std::min(kChunk, size - offset);
    fillMessage(seed, offset, conn.out.data(), n);
    conn.sent.add(conn.out.data(), n);
    try {
      co_await send(conn.fd, conn.out.data(), static_cast<int>(n));
    } catch (const OSError& e) {
      // A send failed by the reader's close is expected; any other failure ends the connection,
      // so that the reader, waiting for an echo that will not come, is failed too.
      if (conn.open) {
        clientError(c, conn, std::string("send: ") + e.what());
        closeConn(c, conn, true);
      }
      co_return;
    }
    offset += n;
  }
}

// Half-closes, then expects the server to close its side with no byte left over.
Future<void> closeGracefully(Clients& c, Conn& conn) {
  if (::shutdown(static_cast<int>(conn.fd), SHUT_WR) != 0)
    clientError(c, conn, std::string("shutdown: ") + std::strerror(errno));
  try {
    const int n = co_await recvInto(conn.fd, conn.in.data(), static_cast<int>(kChunk));
    if (n != 0) clientError(c, conn, std::to_string(n) + " bytes came back after the last message");
  } catch (const OSError& e) {
    if (conn.open) clientError(c, conn, std::string("recvInto after shutdown: ") + e.what());
  }
  closeConn(c, conn, false);
}

// Exchanges messages on the connection's current socket until the plan or the stop ends it; the
// socket is closed when this returns.
Future<void> exchange(Clients& c, Conn& conn) {
  for (;;) {
    if (c.stopping) {
      co_await closeGracefully(c, conn);
      co_return;
    }
    const Plan plan = drawPlan(conn.rng);
    const std::uint64_t seed = conn.rng.next();
    const std::size_t size = drawSize(conn.rng);
    const bool aborting = plan == Plan::AbortClose || plan == Plan::AbortReset;
    const std::size_t abortAt = aborting ? conn.rng.next() % size : size;

    Future<void> writer = writeMessage(c, conn, seed, size);
    std::size_t received = 0;
    bool broken = false;
    while (received < size && received < abortAt) {
      const int want = static_cast<int>(std::min(kChunk, size - received));
      int n = 0;
      try {
        n = co_await recvInto(conn.fd, conn.in.data(), want);
      } catch (const OSError& e) {
        if (conn.open) clientError(c, conn, std::string("recvInto: ") + e.what());
        broken = true;
        break;
      }
      if (n == 0) {
        clientError(c, conn,
                    "end of stream after " + std::to_string(received) + " of " +
                        std::to_string(size) + " bytes echoed");
        broken = true;
        break;
      }
      const std::size_t got = static_cast<std::size_t>(n);
      fillMessage(seed, received, c.expected.data(), got);
      if (std::memcmp(conn.in.data(), c.expected.data(), got) != 0) {
        std::size_t first = 0;
        while (conn.in[first] == c.expected[first])
          ++first;
        clientError(c, conn,
                    "byte " + std::to_string(received + first) + " of a " + std::to_string(size) +
                        "-byte message came back wrong");
        received += first;
        broken = true;
        break;
      }
      conn.received.add(conn.in.data(), got);
      received += got;
    }

    if (broken || received < size) {
      // Broken: the bytes that did not come back are lost. Aborted on purpose: they were never
      // promised (the connection is closed in the middle of the message).
      if (broken) {
        bump(c.stats.lost, size - received);
        closeConn(c, conn, true);
      } else {
        closeConn(c, conn, plan == Plan::AbortReset);
        bump(plan == Plan::AbortReset ? c.stats.resets : c.stats.disconnects);
      }
      co_await writer; // it notices the close; fd is not reused before it has returned
      co_return;
    }
    co_await writer;
    if (conn.sent != conn.received) {
      clientError(c, conn, "running checksums differ after a message that compared equal");
      bump(c.stats.lost, size);
      closeConn(c, conn, true);
      co_return;
    }
    bump(c.stats.bytesEchoed, size);
    bump(c.stats.messages);
    if (!conn.echoedOnce) {
      conn.echoedOnce = true;
      bump(c.stats.warmed);
    }

    switch (plan) {
    case Plan::ThenClose:
      closeConn(c, conn, false);
      bump(c.stats.disconnects);
      co_return;
    case Plan::ThenShutdown:
      co_await closeGracefully(c, conn);
      bump(c.stats.disconnects);
      co_return;
    case Plan::ThenReset:
      closeConn(c, conn, true);
      bump(c.stats.resets);
      co_return;
    default:
      break;
    }
  }
}

// One client: connects, exchanges messages until a disconnect, and again, until the stop.
Future<void> runClient(Clients& c, Conn& conn) {
  const Live live(c.live);
  while (!c.stopping) {
    bool dialed = false;
    try {
      conn.fd = co_await dial(kHost, c.port);
      dialed = true;
    } catch (const std::exception& e) {
      c.stats.errors.add(std::string("client dial: ") + e.what());
    }
    if (!dialed) {
      co_await sleepAsync(100);
      continue;
    }
    conn.open = true;
    conn.sent = Checksum{};
    conn.received = Checksum{};
    c.stats.clientOpen.fetch_add(1, std::memory_order_relaxed);
    bump(c.stats.connects);
    setSockOptInt(conn.fd, IPPROTO_TCP, TCP_NODELAY, 1);
    co_await exchange(c, conn);
  }
}

void runClients(Stats& stats, Port port, int connections, std::uint64_t seed, AsyncEvent stop,
                ThreadReport& report) {
  Clients c(stats, port);
  try {
    addEvent(stop, [&c](AsyncFD) {
      c.stopping = true;
      return true;
    });
    std::vector<Future<void>> runs;
    for (int i = 0; i < connections; ++i) {
      c.conns.push_back(std::make_unique<Conn>(mix(seed + static_cast<std::uint64_t>(i))));
      runs.push_back(runClient(c, *c.conns.back()));
    }
    while (!c.stopping)
      poll(500);
    // Each connection finishes its message, half-closes and waits for the server's close.
    const Clock::time_point limit = Clock::now() + kStopLimit;
    while (c.live > 0 && Clock::now() < limit)
      poll(100);
    if (c.live > 0) {
      stats.errors.add("clients: " + std::to_string(c.live) +
                       " connections still running after the stop limit");
      for (const auto& conn : c.conns)
        closeConn(c, *conn, true);
    }
    drain(kDrainMs);
    for (const Future<void>& run : runs) {
      if (!run.failed()) continue;
      try {
        std::rethrow_exception(run.readError());
      } catch (const std::exception& e) {
        stats.errors.add(std::string("client coroutine: ") + e.what());
      }
    }
    measurePending(report);
  } catch (const std::exception& e) {
    stats.errors.add(std::string("client thread: ") + e.what());
  }
  report.liveCoroutines = c.live;
  getGlobalDispatcher()->suspended.destroyAll(); // as in runServer: the frames refer to `c`
  close(stop);
}

struct Options {
  int seconds = 60;
  int connections = 1000;
  std::uint64_t seed = 0x50a4;
};

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) return false;
    const char* value = argv[++i];
    char* end = nullptr;
    const unsigned long long n = std::strtoull(value, &end, 10);
    if (end == value || *end != '\0') return false;
    if (arg == "--seconds" && n >= 1 && n <= 86400) {
      o.seconds = static_cast<int>(n);
    } else if (arg == "--connections" && n >= 1 && n <= 8000) {
      o.connections = static_cast<int>(n);
    } else if (arg == "--seed") {
      o.seed = n;
    } else {
      return false;
    }
  }
  return true;
}

// 1,000 client sockets and 1,000 server sockets exceed the usual soft limit of 1,024.
void raiseDescriptorLimit(int connections) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  getrlimit(RLIMIT_NOFILE, &limit);
  // Two sockets per connection, the ones still closing, and the process's own.
  const rlim_t wanted = static_cast<rlim_t>(connections) * 2 + 200;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < wanted)
    std::cerr << "soak: warning: RLIMIT_NOFILE is " << limit.rlim_cur << ", below the " << wanted
              << " this run needs\n";
}

void progress(const Stats& st, Clock::time_point start, const char* what) {
  const auto elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::fprintf(stderr,
               "soak: %5.1f s %s: clients open %lld, server open %lld, messages %llu, %.1f MiB "
               "echoed, connects %llu, disconnects %llu, resets %llu, fds %ld, rss %.1f MiB\n",
               elapsed, what, static_cast<long long>(st.clientOpen.load()),
               static_cast<long long>(st.serverOpen.load()),
               static_cast<unsigned long long>(st.messages.load()),
               mib(static_cast<std::int64_t>(st.bytesEchoed.load())),
               static_cast<unsigned long long>(st.connects.load()),
               static_cast<unsigned long long>(st.disconnects.load()),
               static_cast<unsigned long long>(st.resets.load()), countFds(), mib(residentBytes()));
}

// Triggers a worker's stop event and joins it. A worker that ended on an exception has closed
// its event already, and trigger then throws ValueError: the error is in the report either way.
void stopThread(const AsyncEvent& stop, std::thread& worker) {
  try {
    trigger(stop);
  } catch (const ValueError&) {
  }
  worker.join();
}

} // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) {
    std::cerr << "usage: soak [--seconds N] [--connections N] [--seed N]\n";
    return 2;
  }
  raiseDescriptorLimit(o.connections);
  // Before any thread or event exists: at the end everything the run opened must be closed.
  const long fdsBefore = countFds();
  const Clock::time_point start = Clock::now();
  Stats stats;
  std::vector<std::string> failures;

  // The main thread only triggers these; each worker watches and closes its own, so the main
  // thread never makes a dispatcher (whose epoll descriptor would count as a leak).
  const AsyncEvent serverStop = newAsyncEvent();
  const AsyncEvent clientStop = newAsyncEvent();
  ThreadReport serverReport;
  ThreadReport clientReport;
  std::promise<Port> serverStarted;
  std::thread server(runServer, std::ref(stats), serverStop, std::ref(serverStarted),
                     std::ref(serverReport));
  Port port{};
  try {
    port = serverStarted.get_future().get();
  } catch (const std::exception& e) {
    std::cout << "soak: FAIL: the server did not start: " << e.what() << std::endl;
    server.join();
    return 1;
  }
  std::thread clients(runClients, std::ref(stats), port, o.connections, o.seed, clientStop,
                      std::ref(clientReport));

  // The warm-up: every connection is up and has had one message echoed; the allocator's first
  // growth is behind us.
  const auto connections = static_cast<std::uint64_t>(o.connections);
  while (stats.warmed.load() < connections && Clock::now() - start < kWarmupLimit &&
         stats.errors.count() == 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const bool warmedUp = stats.warmed.load() >= connections;
  if (!warmedUp)
    failures.push_back("the warm-up did not finish: " + std::to_string(stats.warmed.load()) +
                       " of " + std::to_string(o.connections) + " connections echoed a message");
  const std::int64_t rssBefore = residentBytes();
  const double warmupSeconds = std::chrono::duration<double>(Clock::now() - start).count();
  progress(stats, start, "warmed up");

  // The load runs until N seconds after the start (or just past the warm-up, if that took longer).
  const Clock::time_point end = start + std::chrono::seconds(o.seconds);
  Clock::time_point nextProgress = Clock::now() + kProgressEvery;
  while (warmedUp && Clock::now() < end && stats.errors.count() == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (Clock::now() >= nextProgress) {
      progress(stats, start, "running");
      nextProgress += kProgressEvery;
    }
  }
  const std::int64_t rssLoaded = residentBytes();
  progress(stats, start, "stopping");

  // Stop the clients (each finishes its message and closes), then the server.
  stopThread(clientStop, clients);
  stopThread(serverStop, server);
  const long fdsAfter = countFds();
  const std::int64_t rssAfter = residentBytes();
  const double totalSeconds = std::chrono::duration<double>(Clock::now() - start).count();

  const std::uint64_t pending = serverReport.pending + clientReport.pending;
  const std::uint64_t registered = serverReport.registered + clientReport.registered;
  const std::int64_t live = serverReport.liveCoroutines + clientReport.liveCoroutines;
  const std::uint64_t errors = stats.errors.count();
  for (const std::string& e : stats.errors.first())
    std::cout << "soak: error: " << e << "\n";
  if (errors != 0) failures.push_back(std::to_string(errors) + " unexpected errors (first above)");
  if (stats.lost.load() != 0)
    failures.push_back(std::to_string(stats.lost.load()) + " bytes lost or echoed wrong");
  if (pending != 0)
    failures.push_back(std::to_string(pending) + " operations still pending after the drain");
  if (registered != 0)
    failures.push_back(std::to_string(registered) + " descriptors still registered at the end");
  if (live != 0) failures.push_back(std::to_string(live) + " coroutines never returned");
  if (fdsAfter != fdsBefore)
    failures.push_back("descriptors: " + std::to_string(fdsBefore) + " before, " +
                       std::to_string(fdsAfter) + " after");
  // Checked at the end of the load as well as after the teardown: what the library holds and
  // frees only when a dispatcher is destroyed (a table or heap that only grows, frames suspended
  // for ever) shows only under load.
  const std::int64_t rssLimit = rssBefore + rssBefore / kRssSlackDivisor + kRssSlackBytes;
  for (const auto& [when, rss] : {std::pair{"at the end of the load", rssLoaded},
                                  std::pair{"after the teardown", rssAfter}}) {
    if (rss > rssLimit)
      failures.push_back("rss grew from " + std::to_string(rssBefore) + " after the warm-up to " +
                         std::to_string(rss) + " bytes " + when + " (limit " +
                         std::to_string(rssLimit) + ")");
  }

  std::printf("soak: seconds=%.1f warmup_seconds=%.1f connections=%d seed=%llu accepted=%llu "
              "errors=%llu rss_loaded=%lld registered=%llu\n",
              totalSeconds, warmupSeconds, o.connections, static_cast<unsigned long long>(o.seed),
              static_cast<unsigned long long>(stats.accepted.load()),
              static_cast<unsigned long long>(errors), static_cast<long long>(rssLoaded),
              static_cast<unsigned long long>(registered));
  for (const std::string& f : failures)
    std::printf("soak: FAIL: %s\n", f.c_str());
  std::printf(
      "bytes_echoed=%llu messages=%llu connects=%llu disconnects=%llu resets=%llu lost=%llu "
      "pending=%llu fds_before=%ld fds_after=%ld rss_before=%lld rss_after=%lld\n",
      static_cast<unsigned long long>(stats.bytesEchoed.load()),
      static_cast<unsigned long long>(stats.messages.load()),
      static_cast<unsigned long long>(stats.connects.load()),
      static_cast<unsigned long long>(stats.disconnects.load()),
      static_cast<unsigned long long>(stats.resets.load()),
      static_cast<unsigned long long>(stats.lost.load()), static_cast<unsigned long long>(pending),
      fdsBefore, fdsAfter, static_cast<long long>(rssBefore), static_cast<long long>(rssAfter));
  return failures.empty() ? 0 : 1;
}
