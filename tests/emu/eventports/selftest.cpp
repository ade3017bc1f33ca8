// selftest.cpp: pins each event-ports semantic the emulator promises (see the list at the top of
// eventports.cpp) with real descriptors, so that a backend that forgets to re-associate after an
// event, or mishandles ETIME with events, fails against it as it would on illumos.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <port.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

static_assert(PORT_SOURCE_AIO == 1 && PORT_SOURCE_TIMER == 2 && PORT_SOURCE_USER == 3 &&
              PORT_SOURCE_FD == 4 && PORT_SOURCE_ALERT == 5 && PORT_SOURCE_MQ == 6 &&
              PORT_SOURCE_FILE == 7);
static_assert(PORT_ALERT_SET == 1 && PORT_ALERT_UPDATE == 2 && SIGEV_PORT == 4);
static_assert(sizeof(port_event_t) == 24 && offsetof(port_event_t, portev_source) == 4 &&
              offsetof(port_event_t, portev_object) == 8 &&
              offsetof(port_event_t, portev_user) == 16);
static_assert(sizeof(port_notify_t) == 16 && offsetof(port_notify_t, portnfy_user) == 8);

// The whole file runs in about a second; a broken emulator that leaves a wait blocked must not
// hang the suite: SIGALRM's default action ends the process.
[[maybe_unused]] const bool watchdog = (::alarm(60), true);

void* cookie(int n) {
  return reinterpret_cast<void*>(uintptr_t(0x1000 + n));
}

timespec ms(long n) {
  return timespec{n / 1000, (n % 1000) * 1000000};
}

struct Port {
  int fd = port_create();
  Port() { REQUIRE(fd >= 0); }
  ~Port() { ::close(fd); }
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;
};

struct Fds {
  int a = -1, b = -1;
  ~Fds() {
    if (a >= 0) ::close(a);
    if (b >= 0) ::close(b);
  }
};

Fds socketPair() {
  Fds f;
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
  f.a = sv[0];
  f.b = sv[1];
  return f;
}

Fds pipePair() {
  Fds f;
  int p[2];
  REQUIRE(::pipe2(p, O_NONBLOCK) == 0);
  f.a = p[0];
  f.b = p[1];
  return f;
}

void put(int fd) {
  REQUIRE(::write(fd, "x", 1) == 1);
}

// port_getn(max, min, timeout in ms, or -1 for none): returns rc, with errno and events.
struct Got {
  int rc;
  int err;
  uint_t nget;
  std::vector<port_event_t> evs;
};

Got getn(int port, uint_t max, uint_t min, long timeoutMs) {
  std::vector<port_event_t> list(max ? max : 1);
  for (auto& e : list)
    e.portev_source = 0;
  Got g{};
  g.nget = min;
  timespec ts = ms(timeoutMs < 0 ? 0 : timeoutMs);
  errno = 0;
  g.rc = port_getn(port, list.data(), max, &g.nget, timeoutMs < 0 ? nullptr : &ts);
  g.err = errno;
  if (max > 0 && g.nget <= max)
    for (uint_t i = 0; i < g.nget; ++i)
      g.evs.push_back(list[i]);
  return g;
}

uint_t queued(int port) {
  uint_t n = 0;
  REQUIRE(port_getn(port, nullptr, 0, &n, nullptr) == 0);
  return n;
}

// The one event a zero-timeout poll finds, or none.
std::vector<port_event_t> poll(int port) {
  Got g = getn(port, 16, 1, 0);
  REQUIRE(g.rc == 0);
  return g.evs;
}

int elapsedMs(Clock::time_point since) {
  return int(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count());
}

int tcpListener(sockaddr_in* addr) {
  const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  REQUIRE(l >= 0);
  *addr = sockaddr_in{};
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof *addr;
  REQUIRE(::bind(l, reinterpret_cast<sockaddr*>(addr), len) == 0);
  REQUIRE(::listen(l, 8) == 0);
  REQUIRE(::getsockname(l, reinterpret_cast<sockaddr*>(addr), &len) == 0);
  return l;
}

} // namespace

TEST_CASE("port_create: the port is a descriptor; a closed port is EBADF, another fd EBADFD") {
  int port = port_create();
  REQUIRE(port >= 0);
  CHECK(::fcntl(port, F_GETFD) != -1);
  CHECK(port_send(port, 1, nullptr) == 0);
  CHECK(::close(port) == 0);
  CHECK(port_send(port, 1, nullptr) == -1);
  CHECK(errno == EBADF);
  Fds p = pipePair();
  uint_t n = 1;
  CHECK(port_getn(p.a, nullptr, 0, &n, nullptr) == -1);
  CHECK(errno == EBADFD);
  // The number reused by a new port is a fresh port: nothing of the old one's queue survives.
  Port fresh;
  CHECK(queued(fresh.fd) == 0);
}

TEST_CASE("close: a closed port leaves no descriptor of the emulator behind") {
  auto open = [] {
    int n = 0;
    for (int fd = 0; fd < 4096; ++fd)
      n += ::fcntl(fd, F_GETFD) != -1;
    return n;
  };
  { Port first; } // the emulator's one descriptor of its own exists from the first port on
  const int before = open();
  {
    Port port;
    REQUIRE(port_send(port.fd, 1, nullptr) == 0);
    Fds s = socketPair();
    REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(s.a), POLLIN, nullptr) == 0);
    CHECK(open() == before + 3);
  }
  CHECK(open() == before);
}

TEST_CASE("port_associate: an fd whose condition already holds is queued at once") {
  Port port;
  Fds s = socketPair();
  put(s.b);
  REQUIRE(port_send(port.fd, 1, nullptr) == 0);
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(s.a), POLLIN, cookie(1)) == 0);
  REQUIRE(port_send(port.fd, 2, nullptr) == 0);
  CHECK(queued(port.fd) == 3);
  auto evs = poll(port.fd);
  REQUIRE(evs.size() == 3); // in the order they were queued
  CHECK(evs[0].portev_source == PORT_SOURCE_USER);
  CHECK(evs[1].portev_source == PORT_SOURCE_FD);
  CHECK(evs[1].portev_object == uintptr_t(s.a));
  CHECK(evs[1].portev_events == POLLIN);
  CHECK(evs[1].portev_user == cookie(1));
  CHECK(evs[2].portev_source == PORT_SOURCE_USER);
}

TEST_CASE("port_getn: an fd whose event was retrieved is not reported again until it is "
          "re-associated") {
  Port port;
  Fds s = socketPair();
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(s.a), POLLIN, cookie(1)) == 0);
  CHECK(poll(port.fd).empty());
  put(s.b);
  Got g = getn(port.fd, 4, 1, 1000);
  REQUIRE(g.rc == 0);
  REQUIRE(g.evs.size() == 1);
  CHECK(g.evs[0].portev_events == POLLIN);
  // Still readable (nothing was read) but no longer associated: silence, and ENOENT.
  put(s.b);
  CHECK(getn(port.fd, 4, 1, 50).evs.empty());
  CHECK(port_dissociate(port.fd, PORT_SOURCE_FD, uintptr_t(s.a)) == -1);
  CHECK(errno == ENOENT);
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(s.a), POLLIN, cookie(2)) == 0);
  auto evs = poll(port.fd);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].portev_user == cookie(2));
  CHECK(poll(port.fd).empty());
}

TEST_CASE("port_associate: re-associating replaces the events mask and the user, and the "
          "event queued under the old ones") {
  Port port;
  Fds s = socketPair();
  put(s.b); // readable, and writable as always
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(s.a), POLLOUT, cookie(1)) == 0);
  CHECK(queued(port.fd) == 1);
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(s.a), POLLIN, cookie(2)) == 0);
  CHECK(queued(port.fd) == 1);
  auto evs = poll(port.fd);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].portev_events == POLLIN);
  CHECK(evs[0].portev_user == cookie(2));

  // Re-associating a waiting association: the event comes once, with the new user.
  Fds t = socketPair();
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(t.a), POLLIN, cookie(3)) == 0);
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(t.a), POLLIN, cookie(4)) == 0);
  put(t.b);
  Got g = getn(port.fd, 4, 1, 1000);
  REQUIRE(g.evs.size() == 1);
  CHECK(g.evs[0].portev_user == cookie(4));
  CHECK(poll(port.fd).empty());

  // A waiting association whose mask loses POLLIN no longer fires on data.
  Fds p = pipePair();
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(p.a), POLLIN, cookie(5)) == 0);
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(p.a), POLLPRI, cookie(6)) == 0);
  put(p.b);
  CHECK(getn(port.fd, 4, 1, 50).evs.empty());
}

TEST_CASE("port_associate: portev_events holds only the requested bits that fired, plus POLLHUP "
          "and POLLERR which are never filtered") {
  Port port;
  Fds s = socketPair();
  put(s.b);
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(s.a), POLLIN, nullptr) == 0);
  auto evs = poll(port.fd);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].portev_events == POLLIN); // writable too, but not asked for

  // A pipe whose writer closed: POLLHUP although only POLLPRI was asked for.
  Fds p = pipePair();
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(p.a), POLLPRI, nullptr) == 0);
  CHECK(poll(port.fd).empty());
  ::close(p.b);
  p.b = -1;
  Got g = getn(port.fd, 4, 1, 1000);
  REQUIRE(g.evs.size() == 1);
  CHECK(g.evs[0].portev_events == POLLHUP);

  // A TCP connection reset by its peer: POLLERR and POLLHUP, asked for POLLPRI only.
  sockaddr_in addr;
  const int l = tcpListener(&addr);
  const int c = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  int server = -1;
  for (int i = 0; i < 100 && server < 0; ++i, std::this_thread::sleep_for(1ms))
    server = ::accept(l, nullptr, nullptr);
  REQUIRE(server >= 0);
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(c), POLLPRI, nullptr) == 0);
  linger lg{1, 0};
  REQUIRE(::setsockopt(server, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
  ::close(server);
  g = getn(port.fd, 4, 1, 1000);
  REQUIRE(g.evs.size() == 1);
  CHECK(g.evs[0].portev_object == uintptr_t(c));
  CHECK(g.evs[0].portev_events == (POLLERR | POLLHUP));
  ::close(c);
  ::close(l);
}

TEST_CASE("port_dissociate: 0 while waiting or queued (the queued event goes), ENOENT when not "
          "associated, EBADFD for a bad fd") {
  Port port;
  Fds s = socketPair();
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(s.a), POLLIN, nullptr) == 0);
  CHECK(port_dissociate(port.fd, PORT_SOURCE_FD, uintptr_t(s.a)) == 0);
  put(s.b);
  CHECK(getn(port.fd, 4, 1, 50).evs.empty());

  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(s.a), POLLIN, nullptr) == 0);
  CHECK(queued(port.fd) == 1);
  CHECK(port_dissociate(port.fd, PORT_SOURCE_FD, uintptr_t(s.a)) == 0);
  CHECK(queued(port.fd) == 0);
  CHECK(port_dissociate(port.fd, PORT_SOURCE_FD, uintptr_t(s.a)) == -1);
  CHECK(errno == ENOENT);
  CHECK(port_dissociate(port.fd, PORT_SOURCE_FD, uintptr_t(s.b)) == -1);
  CHECK(errno == ENOENT);
  CHECK(port_dissociate(port.fd, PORT_SOURCE_FD, uintptr_t(1) << 40) == -1);
  CHECK(errno == EBADFD);
}

TEST_CASE("port_associate: PORT_SOURCE_FILE is ENOTSUP, another source EINVAL, a bad fd EBADFD, "
          "a closed port EBADF") {
  Port port;
  Fds s = socketPair();
  CHECK(port_associate(port.fd, PORT_SOURCE_FILE, 0, 0, nullptr) == -1);
  CHECK(errno == ENOTSUP);
  CHECK(port_associate(port.fd, PORT_SOURCE_USER, uintptr_t(s.a), POLLIN, nullptr) == -1);
  CHECK(errno == EINVAL);
  const int closed = ::dup(s.a);
  ::close(closed);
  CHECK(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(closed), POLLIN, nullptr) == -1);
  CHECK(errno == EBADFD);
  CHECK(port_associate(closed, PORT_SOURCE_FD, uintptr_t(s.a), POLLIN, nullptr) == -1);
  CHECK(errno == EBADF);
}

TEST_CASE("close: an fd closed while associated loses its association and its queued event is "
          "never delivered") {
  Port port;
  Fds s = socketPair();
  put(s.b);
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(s.a), POLLIN, nullptr) == 0);
  const int number = s.a;
  ::close(s.a);
  s.a = -1;
  CHECK(queued(port.fd) == 0);
  CHECK(poll(port.fd).empty());
  CHECK(port_dissociate(port.fd, PORT_SOURCE_FD, uintptr_t(number)) == -1);
  CHECK(errno == EBADFD);
}

TEST_CASE("close: a reused descriptor number starts fresh and never receives the old file's "
          "event") {
  Port port;
  Fds old = socketPair();
  Fds fresh = socketPair();
  const int number = old.a;

  // Queued, then closed and the number given to another file.
  put(old.b);
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(number), POLLIN, cookie(1)) == 0);
  REQUIRE(::dup2(fresh.a, number) == number);
  CHECK(queued(port.fd) == 0);
  CHECK(poll(port.fd).empty());
  CHECK(port_dissociate(port.fd, PORT_SOURCE_FD, uintptr_t(number)) == -1);
  CHECK(errno == ENOENT);

  // Waiting, the old file kept open elsewhere (its epoll registration survives), then reused.
  Fds old2 = socketPair();
  const int keep = ::dup(old2.a);
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(old2.a), POLLIN, cookie(2)) == 0);
  REQUIRE(::dup2(fresh.a, old2.a) == old2.a);
  put(old2.b); // the old file becomes readable
  CHECK(getn(port.fd, 4, 1, 50).evs.empty());

  // The new file is associated like any other.
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(number), POLLIN, cookie(3)) == 0);
  put(fresh.b);
  Got g = getn(port.fd, 4, 1, 1000);
  REQUIRE(g.evs.size() == 1);
  CHECK(g.evs[0].portev_user == cookie(3));
  ::close(keep);
}

TEST_CASE("port_getn: *nget on input is the minimum; the call waits until that many events are "
          "queued") {
  Port port;
  REQUIRE(port_send(port.fd, 1, cookie(1)) == 0);
  const auto start = Clock::now();
  std::thread sender([&] {
    std::this_thread::sleep_for(50ms);
    port_send(port.fd, 2, cookie(2));
    port_send(port.fd, 3, cookie(3));
  });
  Got g = getn(port.fd, 8, 3, 5000);
  sender.join();
  CHECK(g.rc == 0);
  REQUIRE(g.nget == 3);
  CHECK(elapsedMs(start) >= 40);
  CHECK(g.evs[0].portev_events == 1);
  CHECK(g.evs[2].portev_events == 3);
}

TEST_CASE("port_getn: retrieves at most max events and leaves the rest queued") {
  Port port;
  for (int i = 0; i < 5; ++i)
    REQUIRE(port_send(port.fd, i, nullptr) == 0);
  Got g = getn(port.fd, 2, 1, 0);
  CHECK(g.rc == 0);
  REQUIRE(g.nget == 2);
  CHECK(g.evs[1].portev_events == 1);
  CHECK(queued(port.fd) == 3);
}

TEST_CASE("port_getn: max 0 reports the number of queued events without retrieving them") {
  Port port;
  for (int i = 0; i < 3; ++i)
    REQUIRE(port_send(port.fd, i, nullptr) == 0);
  CHECK(queued(port.fd) == 3);
  CHECK(queued(port.fd) == 3);
  CHECK(getn(port.fd, 8, 3, 0).nget == 3);
}

TEST_CASE("port_getn: *nget greater than max, a NULL nget or a bad timeout is EINVAL; *nget 0 "
          "returns at once") {
  Port port;
  port_event_t list[2];
  uint_t n = 3;
  CHECK(port_getn(port.fd, list, 2, &n, nullptr) == -1);
  CHECK(errno == EINVAL);
  CHECK(port_getn(port.fd, list, 2, nullptr, nullptr) == -1);
  CHECK(errno == EINVAL);
  n = 1;
  timespec bad{0, 1000000000};
  CHECK(port_getn(port.fd, list, 2, &n, &bad) == -1);
  CHECK(errno == EINVAL);
  n = 0;
  CHECK(port_getn(port.fd, list, 2, &n, nullptr) == 0); // would block forever otherwise
  CHECK(n == 0);
}

TEST_CASE("port_getn: an expired timeout returns -1/ETIME with the queued events retrieved and "
          "*nget updated") {
  Port port;
  REQUIRE(port_send(port.fd, 1, cookie(1)) == 0);
  REQUIRE(port_send(port.fd, 2, cookie(2)) == 0);
  const auto start = Clock::now();
  Got g = getn(port.fd, 8, 3, 60);
  CHECK(elapsedMs(start) >= 55);
  CHECK(g.rc == -1);
  CHECK(g.err == ETIME);
  REQUIRE(g.nget == 2);
  CHECK(g.evs[0].portev_user == cookie(1));
  CHECK(g.evs[1].portev_user == cookie(2));
  CHECK(queued(port.fd) == 0);

  g = getn(port.fd, 8, 1, 30); // nothing at all
  CHECK(g.rc == -1);
  CHECK(g.err == ETIME);
  CHECK(g.nget == 0);
}

TEST_CASE("port_getn: a zero timeout polls and returns 0 with whatever is queued, even fewer "
          "than *nget or none") {
  Port port;
  Got g = getn(port.fd, 4, 1, 0);
  CHECK(g.rc == 0);
  CHECK(g.nget == 0);
  REQUIRE(port_send(port.fd, 5, nullptr) == 0);
  g = getn(port.fd, 4, 2, 0);
  CHECK(g.rc == 0);
  REQUIRE(g.nget == 1);
  CHECK(g.evs[0].portev_events == 5);
}

TEST_CASE("port_get: an event, -1/ETIME once the timeout expires, and 0 without writing *pe for "
          "a zero timeout with nothing queued") {
  Port port;
  port_event_t pe{};
  REQUIRE(port_send(port.fd, 7, cookie(7)) == 0);
  timespec t = ms(1000);
  REQUIRE(port_get(port.fd, &pe, &t) == 0);
  CHECK(pe.portev_source == PORT_SOURCE_USER);
  CHECK(pe.portev_events == 7);
  CHECK(pe.portev_user == cookie(7));
  t = ms(30);
  CHECK(port_get(port.fd, &pe, &t) == -1);
  CHECK(errno == ETIME);
  pe.portev_source = 0;
  t = ms(0);
  CHECK(port_get(port.fd, &pe, &t) == 0);
  CHECK(pe.portev_source == 0);
}

namespace {
void onSignal(int) {}
} // namespace

TEST_CASE("port_getn: a signal interrupts the wait with -1/EINTR, nothing retrieved and *nget "
          "untouched") {
  Port port;
  struct sigaction sa {};
  sa.sa_handler = onSignal;
  struct sigaction old {};
  REQUIRE(::sigaction(SIGUSR1, &sa, &old) == 0);
  const pthread_t self = ::pthread_self();
  std::atomic<bool> back{false};
  std::thread killer([&] { // until it lands inside the wait, however slow the machine
    while (!back) {
      std::this_thread::sleep_for(20ms);
      if (!back) ::pthread_kill(self, SIGUSR1);
    }
  });
  Got g = getn(port.fd, 4, 2, -1);
  back = true;
  killer.join();
  ::sigaction(SIGUSR1, &old, nullptr);
  CHECK(g.rc == -1);
  CHECK(g.err == EINTR);
  CHECK(g.nget == 2);
}

TEST_CASE("port_send: every call queues its own PORT_SOURCE_USER event, never coalesced") {
  Port port;
  for (int i = 0; i < 3; ++i)
    REQUIRE(port_send(port.fd, 9, cookie(9)) == 0);
  Got g = getn(port.fd, 8, 1, 0);
  REQUIRE(g.nget == 3);
  for (auto& e : g.evs) {
    CHECK(e.portev_source == PORT_SOURCE_USER);
    CHECK(e.portev_events == 9);
    CHECK(e.portev_user == cookie(9));
  }
}

TEST_CASE("port_send: from another thread wakes a port_getn waiting without a timeout") {
  Port port;
  std::thread sender([&] {
    std::this_thread::sleep_for(50ms);
    port_send(port.fd, 4, cookie(4));
  });
  Got g = getn(port.fd, 4, 1, -1);
  sender.join();
  CHECK(g.rc == 0);
  REQUIRE(g.nget == 1);
  CHECK(g.evs[0].portev_user == cookie(4));
}

TEST_CASE("port_send: events sent by several threads at once all arrive, each once") {
  Port port;
  constexpr int kThreads = 4, kEach = 500;
  std::vector<std::thread> senders;
  for (int t = 0; t < kThreads; ++t)
    senders.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i)
        while (port_send(port.fd, i, cookie(t)) != 0)
          std::this_thread::yield();
    });
  std::vector<int> next(kThreads, 0);
  int total = 0, outOfOrder = 0, strays = 0;
  while (total < kThreads * kEach) {
    Got g = getn(port.fd, 64, 1, 2000);
    if (g.rc != 0) break; // the senders are joined before anything is asserted
    for (auto& e : g.evs) {
      const auto t = int(reinterpret_cast<uintptr_t>(e.portev_user) - 0x1000);
      if (t < 0 || t >= kThreads) {
        ++strays;
        continue;
      }
      outOfOrder += e.portev_events != next[t]++;
      ++total;
    }
  }
  for (auto& t : senders)
    t.join();
  CHECK(total == kThreads * kEach);
  CHECK(strays == 0);
  CHECK(outOfOrder == 0);
  CHECK(queued(port.fd) == 0);
}

TEST_CASE("port_associate: an association made by another thread reaches a thread waiting in "
          "port_getn") {
  Port port;
  Fds ready = socketPair(), later = socketPair();
  put(ready.b);
  std::thread other([&] {
    std::this_thread::sleep_for(30ms);
    port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(later.a), POLLIN, cookie(2));
    port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(ready.a), POLLIN, cookie(1));
    std::this_thread::sleep_for(30ms);
    put(later.b);
  });
  Got first = getn(port.fd, 4, 1, 5000);
  Got second = getn(port.fd, 4, 1, 5000);
  other.join();
  REQUIRE(first.nget == 1);
  CHECK(first.evs[0].portev_user == cookie(1)); // queued at once when associated
  REQUIRE(second.nget == 1);
  CHECK(second.evs[0].portev_user == cookie(2));
}

TEST_CASE("port_send: EAGAIN once process.max-port-events events wait in the port") {
  const int old = emu_port_max_events(3);
  Port port;
  emu_port_max_events(old);
  for (int i = 0; i < 3; ++i)
    REQUIRE(port_send(port.fd, i, nullptr) == 0);
  CHECK(port_send(port.fd, 3, nullptr) == -1);
  CHECK(errno == EAGAIN);
  CHECK(getn(port.fd, 1, 1, 0).nget == 1);
  CHECK(port_send(port.fd, 3, nullptr) == 0);
}

TEST_CASE("port_sendn: sends to each port and reports the error of each") {
  Port a, b;
  int ports[3] = {a.fd, -1, b.fd};
  int errors[3] = {-1, -1, -1};
  CHECK(port_sendn(ports, errors, 3, 1, nullptr) == 2);
  CHECK(errors[0] == 0);
  CHECK(errors[1] == EBADF);
  CHECK(errors[2] == 0);
  CHECK(queued(a.fd) == 1);
  CHECK(queued(b.fd) == 1);
}

TEST_CASE("port_alert: alert mode returns one PORT_SOURCE_ALERT event at once, never consumed; "
          "events 0 leaves it") {
  Port port;
  REQUIRE(port_send(port.fd, 1, cookie(1)) == 0);
  REQUIRE(port_alert(port.fd, PORT_ALERT_SET, 7, cookie(7)) == 0);
  for (int i = 0; i < 2; ++i) {
    Got g = getn(port.fd, 4, 2, 1000);
    CHECK(g.rc == 0);
    REQUIRE(g.nget == 1);
    CHECK(g.evs[0].portev_source == PORT_SOURCE_ALERT);
    CHECK(g.evs[0].portev_events == 7);
    CHECK(g.evs[0].portev_user == cookie(7));
  }
  CHECK(queued(port.fd) == 1); // the user event waits
  CHECK(port_alert(port.fd, PORT_ALERT_UPDATE, 8, nullptr) == -1);
  CHECK(errno == EBUSY);
  CHECK(port_alert(port.fd, PORT_ALERT_SET | PORT_ALERT_UPDATE, 8, nullptr) == -1);
  CHECK(errno == EINVAL);
  REQUIRE(port_alert(port.fd, PORT_ALERT_SET, 8, cookie(8)) == 0); // SET overwrites
  CHECK(getn(port.fd, 4, 1, 0).evs[0].portev_events == 8);
  REQUIRE(port_alert(port.fd, PORT_ALERT_SET, 0, nullptr) == 0);
  Got g = getn(port.fd, 4, 1, 0);
  REQUIRE(g.nget == 1);
  CHECK(g.evs[0].portev_source == PORT_SOURCE_USER);
  REQUIRE(port_alert(port.fd, PORT_ALERT_UPDATE, 3, nullptr) == 0); // UPDATE enters it too
  CHECK(getn(port.fd, 4, 1, 0).evs[0].portev_source == PORT_SOURCE_ALERT);
}

TEST_CASE("port_alert: wakes a thread waiting in port_getn") {
  Port port;
  std::thread alerter([&] {
    std::this_thread::sleep_for(50ms);
    port_alert(port.fd, PORT_ALERT_SET, 1, cookie(1));
  });
  Got g = getn(port.fd, 4, 1, -1);
  alerter.join();
  REQUIRE(g.nget == 1);
  CHECK(g.evs[0].portev_source == PORT_SOURCE_ALERT);
}

TEST_CASE("port_getn: threads waiting on one port each get their events") {
  Port port;
  std::atomic<int> got{0};
  auto waiter = [&] {
    Got g = getn(port.fd, 1, 1, 5000);
    if (g.rc == 0 && g.nget == 1) ++got;
  };
  std::thread t1(waiter), t2(waiter);
  std::this_thread::sleep_for(30ms);
  port_send(port.fd, 1, nullptr);
  port_send(port.fd, 2, nullptr);
  t1.join();
  t2.join();
  CHECK(got == 2);
}

TEST_CASE("port_associate: a listening TCP socket reports a pending connection once per "
          "association; a connect in progress reports POLLOUT") {
  Port port;
  sockaddr_in addr;
  const int l = tcpListener(&addr);
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(l), POLLIN, cookie(1)) == 0);
  const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  const int rc = ::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  REQUIRE((rc == 0 || errno == EINPROGRESS));
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(c), POLLOUT, cookie(2)) == 0);
  int listener = 0, connector = 0;
  for (int i = 0; i < 2 && !(listener && connector); ++i) {
    Got g = getn(port.fd, 4, 1, 1000);
    for (auto& e : g.evs) {
      if (e.portev_user == cookie(1)) {
        ++listener;
        CHECK(e.portev_events == POLLIN);
      } else if (e.portev_user == cookie(2)) {
        ++connector;
        CHECK(e.portev_events == POLLOUT);
      }
    }
  }
  CHECK(listener == 1);
  CHECK(connector == 1);
  CHECK(getn(port.fd, 4, 1, 30).evs.empty()); // not accepted, but no longer associated
  REQUIRE(port_associate(port.fd, PORT_SOURCE_FD, uintptr_t(l), POLLIN, cookie(1)) == 0);
  CHECK(poll(port.fd).size() == 1);
  ::close(c);
  ::close(l);
}

namespace {
timer_t portTimer(int port, port_notify_t* pn) {
  sigevent sev{};
  sev.sigev_notify = SIGEV_PORT;
  sev.sigev_value.sival_ptr = pn;
  pn->portnfy_port = port;
  timer_t id{};
  REQUIRE(timer_create(CLOCK_MONOTONIC, &sev, &id) == 0);
  return id;
}

itimerspec after(long first, long every) {
  return itimerspec{ms(every), ms(first)};
}
} // namespace

TEST_CASE("timer_create: SIGEV_PORT delivers PORT_SOURCE_TIMER events with the timer id and "
          "portnfy_user") {
  Port port;
  port_notify_t pn{0, cookie(5)};
  timer_t id = portTimer(port.fd, &pn);
  const auto start = Clock::now();
  itimerspec its = after(20, 0);
  REQUIRE(timer_settime(id, 0, &its, nullptr) == 0);
  Got g = getn(port.fd, 4, 1, 2000);
  CHECK(elapsedMs(start) >= 19);
  REQUIRE(g.nget == 1);
  CHECK(g.evs[0].portev_source == PORT_SOURCE_TIMER);
  CHECK(g.evs[0].portev_object == uintptr_t(id));
  CHECK(g.evs[0].portev_user == cookie(5));
  CHECK(g.evs[0].portev_events == 1);
  CHECK(getn(port.fd, 4, 1, 40).evs.empty()); // one-shot
  CHECK(timer_delete(id) == 0);
  CHECK(timer_delete(id) == -1);
  CHECK(errno == EINVAL);
}

TEST_CASE("timer_settime: TIMER_ABSTIME fires at an absolute CLOCK_MONOTONIC time") {
  Port port;
  port_notify_t pn{0, nullptr};
  timer_t id = portTimer(port.fd, &pn);
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  itimerspec its{};
  its.it_value = now;
  its.it_value.tv_nsec += 30000000;
  if (its.it_value.tv_nsec >= 1000000000) ++its.it_value.tv_sec, its.it_value.tv_nsec -= 1000000000;
  const auto start = Clock::now();
  REQUIRE(timer_settime(id, TIMER_ABSTIME, &its, nullptr) == 0);
  Got g = getn(port.fd, 4, 1, 2000);
  CHECK(elapsedMs(start) >= 25);
  REQUIRE(g.nget == 1);
  CHECK(g.evs[0].portev_source == PORT_SOURCE_TIMER);
  timer_delete(id);
}

TEST_CASE("timer: a periodic timer whose event waits queues no second one; portev_events counts "
          "the expirations and timer_getoverrun stays 0") {
  Port port;
  port_notify_t pn{0, cookie(6)};
  timer_t id = portTimer(port.fd, &pn);
  itimerspec its = after(10, 10);
  REQUIRE(timer_settime(id, 0, &its, nullptr) == 0);
  for (int i = 0; i < 10; ++i) { // looking often, so each expiration is seen on its own
    std::this_thread::sleep_for(12ms);
    CHECK(queued(port.fd) <= 1);
  }
  CHECK(queued(port.fd) == 1);
  Got g = getn(port.fd, 4, 1, 0);
  REQUIRE(g.nget == 1);
  CHECK(g.evs[0].portev_events >= 5);
  CHECK(timer_getoverrun(id) == 0);
  g = getn(port.fd, 4, 1, 2000); // and again after the retrieval
  REQUIRE(g.nget == 1);
  CHECK(g.evs[0].portev_events >= 1);
  itimerspec cur{};
  CHECK(timer_gettime(id, &cur) == 0);
  CHECK(cur.it_interval.tv_nsec == 10000000);
  timer_delete(id);
}

TEST_CASE("timer_delete: removes the event queued and not retrieved, and the id is reused") {
  Port port;
  port_notify_t pn{0, nullptr};
  timer_t id = portTimer(port.fd, &pn);
  itimerspec its = after(1, 0);
  REQUIRE(timer_settime(id, 0, &its, nullptr) == 0);
  std::this_thread::sleep_for(20ms);
  CHECK(queued(port.fd) == 1);
  REQUIRE(timer_delete(id) == 0);
  CHECK(queued(port.fd) == 0);
  timer_t again = portTimer(port.fd, &pn);
  CHECK(again == id);
  timer_delete(again);
}

TEST_CASE("timer_create: another notification than SIGEV_PORT goes to glibc's timer_create") {
  sigevent sev{};
  sev.sigev_notify = SIGEV_NONE;
  timer_t id{};
  REQUIRE(timer_create(CLOCK_MONOTONIC, &sev, &id) == 0);
  itimerspec its = after(1000, 0), cur{};
  CHECK(timer_settime(id, 0, &its, nullptr) == 0);
  CHECK(timer_gettime(id, &cur) == 0);
  CHECK(cur.it_value.tv_sec + cur.it_value.tv_nsec > 0);
  CHECK(timer_getoverrun(id) == 0);
  CHECK(timer_delete(id) == 0);
}

TEST_CASE("quirks: EMU_PORT_QUIRK_ETIME_WITH_EVENTS returns -1/ETIME together with the events "
          "and *nget") {
  Port port;
  const int old = emu_port_quirks(EMU_PORT_QUIRK_ETIME_WITH_EVENTS);
  REQUIRE(port_send(port.fd, 3, cookie(3)) == 0);
  Got g = getn(port.fd, 4, 1, 1000);
  port_event_t pe{};
  REQUIRE(port_send(port.fd, 4, cookie(4)) == 0);
  timespec t = ms(1000);
  const int rc = port_get(port.fd, &pe, &t);
  const int err = errno;
  emu_port_quirks(old);
  CHECK(g.rc == -1);
  CHECK(g.err == ETIME);
  REQUIRE(g.nget == 1);
  CHECK(g.evs[0].portev_user == cookie(3));
  CHECK(rc == -1);
  CHECK(err == ETIME);
  CHECK(pe.portev_user == cookie(4));
}

TEST_CASE("quirks: EMU_PORT_QUIRK_NGET_NOT_UPDATED leaves *nget as it was on ETIME without "
          "events") {
  Port port;
  const int old = emu_port_quirks(EMU_PORT_QUIRK_NGET_NOT_UPDATED);
  Got g = getn(port.fd, 4, 1, 20);
  emu_port_quirks(old);
  CHECK(g.rc == -1);
  CHECK(g.err == ETIME);
  CHECK(g.nget == 1);
  CHECK(g.evs.size() == 1);
  CHECK(g.evs[0].portev_source == 0); // nothing was written: the caller's sentinel survives
}
