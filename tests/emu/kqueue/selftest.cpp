// Self-test of the kqueue emulator: each semantic of platform-semantics.md §A that a kqueue
// backend may rely on (or get wrong) is pinned here with real descriptors, so a backend that
// mishandles EV_EOF with data, forgets EV_ERROR entries or counts on registrations surviving close
// fails against the emulator as it would against FreeBSD. Every wait is bounded; the file runs in
// well under 10 s.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <sys/event.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <csignal>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using Clock = std::chrono::steady_clock;

// A kq that closes itself.
struct Kq {
  int fd = kqueue();
  Kq() { REQUIRE(fd >= 0); }
  Kq(const Kq&) = delete;
  Kq& operator=(const Kq&) = delete;
  ~Kq() { ::close(fd); }
};

struct kevent make(uintptr_t ident, short filter, unsigned short flags, unsigned fflags = 0,
                   int64_t data = 0, void* udata = nullptr) {
  struct kevent kev;
  EV_SET(&kev, ident, filter, flags, fflags, data, udata);
  return kev;
}

// One change, no event list: 0, or -1 with errno.
int change(int kq, uintptr_t ident, short filter, unsigned short flags, unsigned fflags = 0,
           int64_t data = 0, void* udata = nullptr) {
  const struct kevent kev = make(ident, filter, flags, fflags, data, udata);
  return kevent(kq, &kev, 1, nullptr, 0, nullptr);
}

std::vector<struct kevent> wait(int kq, int ms = 0, int max = 16) {
  std::vector<struct kevent> events(static_cast<size_t>(max));
  const timespec timeout{ms / 1000, (ms % 1000) * 1000000L};
  const int n = kevent(kq, nullptr, 0, events.data(), max, &timeout);
  REQUIRE(n >= 0);
  events.resize(static_cast<size_t>(n));
  return events;
}

const struct kevent* find(const std::vector<struct kevent>& events, uintptr_t ident, short filter) {
  for (const auto& kev : events)
    if (kev.ident == ident && kev.filter == filter) return &kev;
  return nullptr;
}

int count(const std::vector<struct kevent>& events, uintptr_t ident, short filter) {
  int n = 0;
  for (const auto& kev : events)
    n += kev.ident == ident && kev.filter == filter ? 1 : 0;
  return n;
}

// Two connected stream descriptors that close themselves.
struct Pair {
  int a = -1, b = -1;
  Pair(const Pair&) = delete;
  Pair& operator=(const Pair&) = delete;
  Pair() = default;
  ~Pair() {
    if (a >= 0) ::close(a);
    if (b >= 0) ::close(b);
  }
  void closeA() { ::close(std::exchange(a, -1)); }
  void closeB() { ::close(std::exchange(b, -1)); }
};

void socketPair(Pair& p) {
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
  p.a = fds[0];
  p.b = fds[1];
}

void pipePair(Pair& p) { // a = read end, b = write end
  int fds[2];
  REQUIRE(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
  p.a = fds[0];
  p.b = fds[1];
}

int tcpListener(sockaddr_in& addr) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  REQUIRE(fd >= 0);
  addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  REQUIRE(listen(fd, 16) == 0);
  return fd;
}

int tcpConnect(const sockaddr_in& addr) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  REQUIRE(fd >= 0);
  const int rc = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  REQUIRE((rc == 0 || errno == EINPROGRESS));
  return fd;
}

// a = client, b = the accepted server side.
void tcpPair(Pair& p) {
  sockaddr_in addr{};
  const int listener = tcpListener(addr);
  p.a = tcpConnect(addr);
  const auto until = Clock::now() + std::chrono::seconds(2);
  while ((p.b = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) < 0 &&
         Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ::close(listener);
  REQUIRE(p.b >= 0);
}

void put(int fd, const char* text) {
  REQUIRE(::write(fd, text, strlen(text)) == static_cast<ssize_t>(strlen(text)));
}

bool blocked(int sig) {
  sigset_t now;
  pthread_sigmask(SIG_SETMASK, nullptr, &now);
  return sigismember(&now, sig) == 1;
}

int tag1, tag2; // addresses used as udata

void onAlarm(int) {}

// Interrupts a kevent() that waits with no timeout (SIGALRM, no SA_RESTART: EINTR) if it has not
// returned within `ms`, so that a broken emulator fails a named check instead of hanging.
struct Watchdog {
  pthread_t target = pthread_self();
  std::mutex mutex;
  std::condition_variable done;
  bool finished = false;
  struct sigaction old {};
  std::thread thread;
  explicit Watchdog(int ms) {
    struct sigaction act {};
    act.sa_handler = onAlarm;
    sigemptyset(&act.sa_mask);
    sigaction(SIGALRM, &act, &old);
    thread = std::thread([this, ms] {
      std::unique_lock<std::mutex> lock(mutex);
      if (!done.wait_for(lock, std::chrono::milliseconds(ms), [this] { return finished; }))
        pthread_kill(target, SIGALRM);
    });
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      finished = true;
    }
    done.notify_one();
    thread.join();
    sigaction(SIGALRM, &old, nullptr);
  }
};

// fork() with stdio flushed, so that a child does not print the parent's buffered output again.
pid_t forkChild() {
  fflush(nullptr);
  return fork();
}

} // namespace

// ---- kevent() call semantics (§A2) --------------------------------------------------------------

// First: every other case registers with nevents 0 and no timeout, so if this is broken the
// rest hang (and the harness's timeout ends them) after this one has failed by name.
TEST_CASE("kevent: nevents 0 returns at once after applying the changes, whatever the timeout") {
  Kq kq;
  const struct kevent add = make(1, EVFILT_USER, EV_ADD);
  const timespec second{1, 0};
  const auto start = Clock::now();
  CHECK(kevent(kq.fd, &add, 1, nullptr, 0, &second) == 0);
  CHECK(kevent(kq.fd, nullptr, 0, nullptr, 0, &second) == 0);
  CHECK(Clock::now() - start < std::chrono::milliseconds(500));
  CHECK(change(kq.fd, 1, EVFILT_USER, EV_DELETE) == 0);
}

TEST_CASE("kevent: all changes are applied before any event is collected") {
  Kq kq;
  Pair p;
  socketPair(p);
  put(p.b, "x");
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_ADD) == 0);
  // The registration is ready; deleting it in the same call must leave nothing to collect
  const struct kevent del = make(p.a, EVFILT_READ, EV_DELETE);
  struct kevent out[4];
  const timespec zero{0, 0};
  CHECK(kevent(kq.fd, &del, 1, out, 4, &zero) == 0);
  // And one added in the same call is collected by it
  const struct kevent add = make(p.a, EVFILT_READ, EV_ADD);
  REQUIRE(kevent(kq.fd, &add, 1, out, 4, &zero) == 1);
  CHECK(out[0].ident == static_cast<uintptr_t>(p.a));
}

TEST_CASE("kevent: an error in a change with room gives an EV_ERROR entry and processing goes on") {
  Kq kq;
  Pair p;
  socketPair(p);
  struct kevent changes[3] = {make(p.a, EVFILT_READ, EV_DELETE),
                              make(9, EVFILT_TIMER, EV_ADD, 0, -5),
                              make(1, EVFILT_USER, EV_ADD | EV_CLEAR, NOTE_TRIGGER)};
  struct kevent out[4];
  const timespec zero{0, 0};
  // Both errors are reported, nothing is collected (the user event triggered by the third
  // change waits for the next call), and the third change was applied
  REQUIRE(kevent(kq.fd, changes, 3, out, 4, &zero) == 2);
  CHECK(out[0].flags == EV_ERROR);
  CHECK(out[0].data == ENOENT);
  CHECK(out[0].ident == static_cast<uintptr_t>(p.a));
  CHECK(out[0].filter == EVFILT_READ);
  CHECK((out[1].flags & EV_ERROR) != 0);
  CHECK(out[1].data == EINVAL);
  const auto events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(events[0].filter == EVFILT_USER);
}

TEST_CASE("kevent: an error in a change with no room in the event list returns -1") {
  Kq kq;
  errno = 0;
  CHECK(change(kq.fd, 12345, EVFILT_USER, EV_DELETE) == -1);
  CHECK(errno == ENOENT);
  // With room for one entry: the first error takes it, the second fails the call, and the change
  // after it is not applied
  struct kevent changes[3] = {make(1, EVFILT_USER, EV_ENABLE), make(2, EVFILT_USER, EV_ENABLE),
                              make(3, EVFILT_USER, EV_ADD)};
  struct kevent out[1];
  const timespec limit{1, 0}; // a broken emulator waits instead of failing: bounded
  errno = 0;
  CHECK(kevent(kq.fd, changes, 3, out, 1, &limit) == -1);
  CHECK(errno == ENOENT);
  CHECK(out[0].flags == EV_ERROR);
  CHECK(change(kq.fd, 3, EVFILT_USER, EV_DELETE) == -1);
  CHECK(errno == ENOENT);
}

TEST_CASE("kevent: EV_RECEIPT gives an EV_ERROR entry with data 0 for a successful change") {
  Kq kq;
  REQUIRE(change(kq.fd, 5, EVFILT_USER, EV_ADD, NOTE_TRIGGER) == 0); // pending, not drained below
  struct kevent changes[2] = {make(1, EVFILT_USER, EV_ADD | EV_RECEIPT),
                              make(2, EVFILT_USER, EV_DELETE | EV_RECEIPT)};
  struct kevent out[8];
  const timespec limit{1, 0};
  REQUIRE(kevent(kq.fd, changes, 2, out, 8, &limit) == 2);
  CHECK(out[0].flags == EV_ERROR);
  CHECK(out[0].data == 0);
  CHECK(out[0].ident == 1u);
  CHECK(out[1].flags == EV_ERROR);
  CHECK(out[1].data == ENOENT);
  CHECK(wait(kq.fd).size() == 1); // the pending one is still there
}

TEST_CASE("kevent: a zero timeout polls and a timeout waits about that long") {
  Kq kq;
  auto start = Clock::now();
  CHECK(wait(kq.fd, 0).empty());
  CHECK(Clock::now() - start < std::chrono::milliseconds(200)); // loose: the machine may be busy
  start = Clock::now();
  CHECK(wait(kq.fd, 60).empty());
  const auto waited = Clock::now() - start;
  CHECK(waited >= std::chrono::milliseconds(60));
  CHECK(waited < std::chrono::milliseconds(1000));
  struct kevent out[1];
  const timespec bad{0, 1000000000};
  errno = 0;
  CHECK(kevent(kq.fd, nullptr, 0, out, 1, &bad) == -1);
  CHECK(errno == EINVAL);
}

TEST_CASE("kevent: a NULL timeout waits until an event comes") {
  Kq kq;
  REQUIRE(change(kq.fd, 1, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 30) == 0);
  struct kevent out[2];
  const auto start = Clock::now();
  Watchdog watchdog(3000);
  REQUIRE(kevent(kq.fd, nullptr, 0, out, 2, nullptr) == 1);
  CHECK(out[0].filter == EVFILT_TIMER);
  CHECK(Clock::now() - start >= std::chrono::milliseconds(25));
}

TEST_CASE("kevent: EINTR comes with the changes already applied") {
  Kq kq;
  struct sigaction act {
  }, old{};
  act.sa_handler = onAlarm; // no SA_RESTART
  sigemptyset(&act.sa_mask);
  REQUIRE(sigaction(SIGALRM, &act, &old) == 0);
  const pthread_t self = pthread_self();
  std::thread interrupter([self] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    pthread_kill(self, SIGALRM);
  });
  const struct kevent add = make(7, EVFILT_USER, EV_ADD);
  struct kevent out[1];
  const timespec limit{3, 0};
  errno = 0;
  const int n = kevent(kq.fd, &add, 1, out, 1, &limit);
  const int error = errno;
  interrupter.join();
  sigaction(SIGALRM, &old, nullptr);
  CHECK(n == -1);
  CHECK(error == EINTR);
  CHECK(change(kq.fd, 7, EVFILT_USER, EV_DELETE) == 0);
}

TEST_CASE("kevent: at most nevents events are returned, the rest on the next call") {
  Kq kq;
  for (uintptr_t id = 1; id <= 3; ++id)
    REQUIRE(change(kq.fd, id, EVFILT_USER, EV_ADD | EV_CLEAR, NOTE_TRIGGER) == 0);
  CHECK(wait(kq.fd, 0, 2).size() == 2);
  CHECK(wait(kq.fd, 0, 2).size() == 1);
  CHECK(wait(kq.fd, 0, 2).empty());
}

TEST_CASE("kevent: several triggers of one registration aggregate into one event") {
  Kq kq;
  Pair p;
  socketPair(p);
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_ADD) == 0);
  REQUIRE(change(kq.fd, 1, EVFILT_USER, EV_ADD | EV_CLEAR) == 0);
  for (int i = 0; i < 3; ++i) {
    put(p.b, "ab");
    REQUIRE(change(kq.fd, 1, EVFILT_USER, 0, NOTE_TRIGGER) == 0);
  }
  const auto events = wait(kq.fd);
  CHECK(events.size() == 2);
  REQUIRE(find(events, p.a, EVFILT_READ) != nullptr);
  CHECK(find(events, p.a, EVFILT_READ)->data == 6);
  CHECK(count(events, 1, EVFILT_USER) == 1);
}

TEST_CASE("kevent: a descriptor that is not a kq gives EBADF, an unknown filter EINVAL") {
  Pair p;
  socketPair(p);
  errno = 0;
  CHECK(kevent(p.a, nullptr, 0, nullptr, 0, nullptr) == -1);
  CHECK(errno == EBADF);
  CHECK(kevent(-1, nullptr, 0, nullptr, 0, nullptr) == -1);
  CHECK(errno == EBADF);
  Kq kq;
  CHECK(change(kq.fd, p.a, EVFILT_VNODE, EV_ADD) == -1);
  CHECK(errno == EINVAL);
  CHECK(change(kq.fd, 999999, EVFILT_READ, EV_ADD) == -1); // not an open descriptor
  CHECK(errno == EBADF);
  // A change with filter 0 is skipped (kern_event.c), not an error
  struct kevent changes[2] = {make(1, 0, EV_ADD), make(1, EVFILT_USER, EV_ADD)};
  CHECK(kevent(kq.fd, changes, 2, nullptr, 0, nullptr) == 0);
  CHECK(change(kq.fd, 1, EVFILT_USER, EV_DELETE) == 0);
}

// ---- identity and flags (§A1, §A3) -------------------------------------------------------------

TEST_CASE("kevent: re-adding a registration modifies it (udata) and never duplicates it") {
  Kq kq;
  Pair p;
  socketPair(p);
  put(p.b, "x");
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_ADD, 0, 0, &tag1) == 0);
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_ADD, 0, 0, &tag2) == 0);
  const auto events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(events[0].udata == &tag2);
  // READ and WRITE on one descriptor are two registrations
  REQUIRE(change(kq.fd, p.a, EVFILT_WRITE, EV_ADD, 0, 0, &tag1) == 0);
  const auto both = wait(kq.fd);
  CHECK(both.size() == 2);
  REQUIRE(find(both, p.a, EVFILT_WRITE) != nullptr);
  CHECK(find(both, p.a, EVFILT_WRITE)->udata == &tag1);
}

TEST_CASE("kevent: EV_DELETE of a registration that does not exist is ENOENT") {
  Kq kq;
  Pair p;
  socketPair(p);
  CHECK(change(kq.fd, p.a, EVFILT_READ, EV_DELETE) == -1);
  CHECK(errno == ENOENT);
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_ADD) == 0);
  CHECK(change(kq.fd, p.a, EVFILT_WRITE, EV_DELETE) == -1); // other filter: other registration
  CHECK(errno == ENOENT);
  CHECK(change(kq.fd, p.a, EVFILT_READ, EV_DELETE) == 0);
  CHECK(change(kq.fd, p.a, EVFILT_READ, EV_DELETE) == -1);
  CHECK(errno == ENOENT);
}

TEST_CASE("EVFILT_READ: level-triggered by default: unread data is reported on every call") {
  Kq kq;
  Pair p;
  socketPair(p);
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_ADD) == 0);
  CHECK(wait(kq.fd).empty());
  put(p.b, "abc");
  for (int i = 0; i < 3; ++i) {
    const auto events = wait(kq.fd);
    REQUIRE(events.size() == 1);
    CHECK(events[0].data == 3);
    CHECK((events[0].flags & EV_EOF) == 0);
  }
  char buf[8];
  REQUIRE(::read(p.a, buf, sizeof buf) == 3);
  CHECK(wait(kq.fd).empty());
}

TEST_CASE("kevent: EV_ONESHOT deletes the registration after one delivery") {
  Kq kq;
  Pair p;
  socketPair(p);
  put(p.b, "x");
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_ADD | EV_ONESHOT, 0, 0, &tag1) == 0);
  const auto events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK((events[0].flags & EV_ONESHOT) != 0);
  CHECK(wait(kq.fd).empty());
  put(p.b, "y");
  CHECK(wait(kq.fd).empty());
  CHECK(change(kq.fd, p.a, EVFILT_READ, EV_DELETE) == -1);
  CHECK(errno == ENOENT);
}

TEST_CASE("kevent: EV_CLEAR reports data once, and again only when more arrives") {
  Kq kq;
  Pair p;
  socketPair(p);
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_ADD | EV_CLEAR) == 0);
  put(p.b, "ab");
  auto events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(events[0].data == 2);
  CHECK((events[0].flags & EV_CLEAR) != 0);
  CHECK(wait(kq.fd).empty()); // still unread, but already reported
  put(p.b, "c");
  events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(events[0].data == 3);
  CHECK(wait(kq.fd).empty());
}

TEST_CASE("kevent: EV_DISPATCH disables after one delivery and EV_ENABLE re-arms it") {
  Kq kq;
  Pair p;
  socketPair(p);
  put(p.b, "x");
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_ADD | EV_DISPATCH, 0, 0, &tag1) == 0);
  CHECK(wait(kq.fd).size() == 1);
  CHECK(wait(kq.fd).empty());
  put(p.b, "y");
  CHECK(wait(kq.fd).empty());
  // EV_ADD alone does not enable it again (kern_event.c: only EV_ENABLE clears KN_DISABLED)
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_ADD, 0, 0, &tag1) == 0);
  CHECK(wait(kq.fd).empty());
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_ENABLE, 0, 0, &tag1) == 0);
  const auto events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(events[0].data == 2);
  CHECK(change(kq.fd, p.a, EVFILT_READ, EV_DELETE) == 0); // kept while disabled
}

TEST_CASE("kevent: EV_DISABLE suppresses delivery and EV_ENABLE restores it") {
  Kq kq;
  Pair p;
  socketPair(p);
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_ADD | EV_DISABLE) == 0);
  put(p.b, "x");
  CHECK(wait(kq.fd).empty());
  p.closeB(); // even a hang-up is not reported while disabled
  CHECK(wait(kq.fd).empty());
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_ENABLE) == 0);
  const auto events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK((events[0].flags & EV_EOF) != 0);
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_DISABLE) == 0);
  CHECK(wait(kq.fd).empty());
}

// ---- EVFILT_READ / EVFILT_WRITE data and EOF (§A4) ----------------------------------------------

TEST_CASE("EVFILT_READ: data is the number of bytes readable on a socket and a pipe") {
  Kq kq;
  Pair s, t, p;
  socketPair(s);
  tcpPair(t);
  pipePair(p);
  put(s.b, "12345");
  put(t.b, "1234567");
  put(p.b, "123");
  for (int fd : {s.a, t.a, p.a})
    REQUIRE(change(kq.fd, fd, EVFILT_READ, EV_ADD) == 0);
  std::vector<struct kevent> events;
  const auto until = Clock::now() + std::chrono::seconds(2);
  while (events.size() < 3 && Clock::now() < until)
    events = wait(kq.fd, 10);
  REQUIRE(events.size() == 3);
  CHECK(find(events, s.a, EVFILT_READ)->data == 5);
  CHECK(find(events, t.a, EVFILT_READ)->data == 7);
  CHECK(find(events, p.a, EVFILT_READ)->data == 3);
}

TEST_CASE("EVFILT_READ: a listening socket reports its accept queue") {
  Kq kq;
  sockaddr_in addr{};
  const int listener = tcpListener(addr);
  REQUIRE(change(kq.fd, listener, EVFILT_READ, EV_ADD) == 0);
  CHECK(wait(kq.fd).empty());
  const int c1 = tcpConnect(addr), c2 = tcpConnect(addr);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const auto events = wait(kq.fd, 500);
  REQUIRE(events.size() == 1);
  CHECK(events[0].data >= 1);
  CHECK(events[0].data <= 2);
  ::close(c1);
  ::close(c2);
  ::close(listener);
}

TEST_CASE("EVFILT_READ: EV_EOF comes with data still readable when the peer closed") {
  Kq kq;
  Pair s, t, p;
  socketPair(s);
  tcpPair(t);
  pipePair(p);
  put(s.b, "abc");
  put(t.b, "abcd");
  put(p.b, "ab");
  s.closeB();
  t.closeB();
  p.closeB();
  for (int fd : {s.a, t.a, p.a})
    REQUIRE(change(kq.fd, fd, EVFILT_READ, EV_ADD) == 0);
  std::vector<struct kevent> events;
  const auto until = Clock::now() + std::chrono::seconds(2);
  while (events.size() < 3 && Clock::now() < until)
    events = wait(kq.fd, 10);
  REQUIRE(events.size() == 3);
  for (auto [fd, size] : {std::pair{s.a, 3}, std::pair{t.a, 4}, std::pair{p.a, 2}}) {
    const struct kevent* kev = find(events, fd, EVFILT_READ);
    REQUIRE(kev != nullptr);
    CHECK((kev->flags & EV_EOF) != 0);
    CHECK(kev->data == size);
    CHECK(kev->fflags == 0u);
  }
  // Once drained, EV_EOF stays with data 0 (level)
  char buf[8];
  REQUIRE(::read(s.a, buf, sizeof buf) == 3);
  events = wait(kq.fd);
  const struct kevent* kev = find(events, s.a, EVFILT_READ);
  REQUIRE(kev != nullptr);
  CHECK((kev->flags & EV_EOF) != 0);
  CHECK(kev->data == 0);
}

TEST_CASE("EVFILT_READ: a shutdown of the peer's write side gives EV_EOF") {
  Kq kq;
  Pair t;
  tcpPair(t);
  REQUIRE(change(kq.fd, t.a, EVFILT_READ, EV_ADD) == 0);
  CHECK(wait(kq.fd).empty());
  REQUIRE(shutdown(t.b, SHUT_WR) == 0);
  const auto events = wait(kq.fd, 1000);
  REQUIRE(events.size() == 1);
  CHECK((events[0].flags & EV_EOF) != 0);
  CHECK(events[0].data == 0);
}

TEST_CASE("EVFILT_READ: a reset gives EV_EOF with fflags ECONNRESET and leaves the error to recv") {
  Kq kq;
  Pair t;
  tcpPair(t);
  REQUIRE(change(kq.fd, t.a, EVFILT_READ, EV_ADD) == 0);
  const linger abort{1, 0};
  REQUIRE(setsockopt(t.b, SOL_SOCKET, SO_LINGER, &abort, sizeof abort) == 0);
  t.closeB();
  const auto events = wait(kq.fd, 1000);
  REQUIRE(events.size() == 1);
  CHECK((events[0].flags & EV_EOF) != 0);
  CHECK(events[0].fflags == static_cast<unsigned>(ECONNRESET));
  char buf[4];
  errno = 0;
  CHECK(recv(t.a, buf, sizeof buf, 0) == -1);
  CHECK(errno == ECONNRESET);
}

TEST_CASE("EVFILT_WRITE: data is the room in the send buffer, and a full buffer is not writable") {
  Kq kq;
  Pair p;
  socketPair(p);
  REQUIRE(change(kq.fd, p.a, EVFILT_WRITE, EV_ADD) == 0);
  auto events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(events[0].data > 0);
  CHECK((events[0].flags & EV_EOF) == 0);
  const int64_t room = events[0].data;
  char chunk[4096] = {};
  REQUIRE(::write(p.a, chunk, 1000) == 1000);
  events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(events[0].data < room);
  while (::write(p.a, chunk, sizeof chunk) > 0) {
  }
  CHECK(wait(kq.fd).empty());
}

TEST_CASE("EVFILT_WRITE: EV_EOF when the peer went away") {
  Kq kq;
  Pair s, p;
  socketPair(s);
  pipePair(p);
  REQUIRE(change(kq.fd, s.a, EVFILT_WRITE, EV_ADD | EV_CLEAR) == 0);
  REQUIRE(change(kq.fd, p.b, EVFILT_WRITE, EV_ADD | EV_CLEAR) == 0);
  auto events = wait(kq.fd);
  REQUIRE(events.size() == 2);
  for (const auto& kev : events)
    CHECK((kev.flags & EV_EOF) == 0);
  s.closeB();
  p.closeA();
  events = wait(kq.fd);
  REQUIRE(events.size() == 2);
  for (const auto& kev : events)
    CHECK((kev.flags & EV_EOF) != 0);
}

TEST_CASE("EVFILT_WRITE: a refused connect gives EV_EOF with fflags ECONNREFUSED and keeps "
          "SO_ERROR for the application") {
  Kq kq;
  sockaddr_in addr{};
  ::close(tcpListener(addr)); // nobody listens there any more
  const int fd = tcpConnect(addr);
  REQUIRE(change(kq.fd, fd, EVFILT_WRITE, EV_ADD | EV_ONESHOT) == 0);
  const auto events = wait(kq.fd, 1000);
  REQUIRE(events.size() == 1);
  CHECK((events[0].flags & EV_EOF) != 0);
  CHECK(events[0].fflags == static_cast<unsigned>(ECONNREFUSED));
  int error = 0;
  socklen_t len = sizeof error;
  REQUIRE(getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0);
  CHECK(error == ECONNREFUSED);
  ::close(fd);
}

TEST_CASE("EVFILT_WRITE: a connect that succeeds is writable without EV_EOF") {
  Kq kq;
  sockaddr_in addr{};
  const int listener = tcpListener(addr);
  const int fd = tcpConnect(addr);
  REQUIRE(change(kq.fd, fd, EVFILT_WRITE, EV_ADD) == 0);
  const auto events = wait(kq.fd, 1000);
  REQUIRE(events.size() == 1);
  CHECK((events[0].flags & EV_EOF) == 0);
  CHECK(events[0].fflags == 0u);
  ::close(fd);
  ::close(listener);
}

// ---- lifetime (§A5) ----------------------------------------------------------------------------

TEST_CASE(
    "kevent: a registration vanishes when its descriptor is closed; EV_DELETE then is EBADF") {
  Kq kq;
  Pair p;
  socketPair(p);
  put(p.b, "x");
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_ADD) == 0);
  const int fd = p.a;
  p.closeA();
  CHECK(wait(kq.fd).empty());
  CHECK(change(kq.fd, fd, EVFILT_READ, EV_DELETE) == -1);
  CHECK(errno == EBADF);
  CHECK(change(kq.fd, fd, EVFILT_READ, EV_ADD) == -1);
  CHECK(errno == EBADF);
}

TEST_CASE("kevent: a reused descriptor number starts fresh and EV_DELETE on it is ENOENT") {
  Kq kq;
  Pair old, reused;
  socketPair(old);
  put(old.b, "x");
  REQUIRE(change(kq.fd, old.a, EVFILT_READ, EV_ADD | EV_ONESHOT, 0, 0, &tag1) == 0);
  const int number = old.a;
  old.closeA();
  socketPair(reused); // takes the lowest free numbers: the one just closed
  REQUIRE(reused.a == number);
  put(reused.b, "y");
  CHECK(wait(kq.fd).empty()); // the old registration did not pass to the new descriptor
  CHECK(change(kq.fd, number, EVFILT_READ, EV_DELETE) == -1);
  CHECK(errno == ENOENT);
  // A new EV_ADD is a new registration: no EV_ONESHOT, its own udata
  REQUIRE(change(kq.fd, number, EVFILT_READ, EV_ADD, 0, 0, &tag2) == 0);
  for (int i = 0; i < 2; ++i) {
    const auto events = wait(kq.fd);
    REQUIRE(events.size() == 1);
    CHECK(events[0].udata == &tag2);
    CHECK((events[0].flags & EV_ONESHOT) == 0);
  }
}

TEST_CASE("kevent: a registration does not survive close even when a dup keeps the file open") {
  Kq kq;
  Pair p;
  socketPair(p);
  REQUIRE(change(kq.fd, p.a, EVFILT_READ, EV_ADD) == 0);
  const int copy = fcntl(p.a, F_DUPFD_CLOEXEC, 100);
  REQUIRE(copy >= 0);
  const int fd = p.a;
  p.closeA();
  put(p.b, "x");
  CHECK(wait(kq.fd).empty());
  CHECK(wait(kq.fd).empty());
  CHECK(change(kq.fd, fd, EVFILT_READ, EV_DELETE) == -1);
  CHECK(errno == EBADF);
  // The copy can be registered on its own
  REQUIRE(change(kq.fd, copy, EVFILT_READ, EV_ADD) == 0);
  CHECK(wait(kq.fd).size() == 1);
  ::close(copy);
}

TEST_CASE("kevent: a kq is not inherited by a forked child: kevent there fails with EBADF") {
  Kq kq;
  REQUIRE(change(kq.fd, 1, EVFILT_USER, EV_ADD, NOTE_TRIGGER) == 0);
  const pid_t pid = forkChild();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    struct kevent out[1];
    const timespec zero{0, 0};
    const bool ok = kevent(kq.fd, nullptr, 0, out, 1, &zero) == -1 && errno == EBADF;
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(wait(kq.fd).size() == 1); // the parent's is untouched
}

TEST_CASE("kqueue: close() ends a kq; a new kq on its number starts empty") {
  const int first = kqueue();
  REQUIRE(first >= 0);
  REQUIRE(change(first, 1, EVFILT_USER, EV_ADD, NOTE_TRIGGER) == 0);
  REQUIRE(::close(first) == 0);
  CHECK(kevent(first, nullptr, 0, nullptr, 0, nullptr) == -1);
  CHECK(errno == EBADF);
  Kq second;
  CHECK(second.fd == first);
  CHECK(wait(second.fd).empty());
  CHECK(change(second.fd, 1, EVFILT_USER, EV_DELETE) == -1);
  CHECK(errno == ENOENT);
  // A number reused by something else is no kq either
  Kq third;
  ::close(third.fd);
  Pair p;
  socketPair(p);
  REQUIRE(p.a == third.fd);
  CHECK(kevent(p.a, nullptr, 0, nullptr, 0, nullptr) == -1);
  CHECK(errno == EBADF);
  third.fd = kqueue(); // for its destructor
}

// ---- EVFILT_TIMER ------------------------------------------------------------------------------

TEST_CASE("EVFILT_TIMER: periodic, with data the expirations since the last retrieval") {
  Kq kq;
  REQUIRE(change(kq.fd, 1, EVFILT_TIMER, EV_ADD, 0, 10, &tag1) == 0); // 10 ms by default
  std::this_thread::sleep_for(std::chrono::milliseconds(55));
  auto events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(events[0].data >= 4);
  CHECK(events[0].udata == &tag1);
  CHECK((events[0].flags & EV_CLEAR) != 0);
  events = wait(kq.fd, 200); // and it fires again
  REQUIRE(events.size() == 1);
  CHECK(events[0].data >= 1);
  CHECK(change(kq.fd, 1, EVFILT_TIMER, EV_DELETE) == 0);
}

TEST_CASE("EVFILT_TIMER: EV_ONESHOT fires once and is deleted") {
  Kq kq;
  REQUIRE(change(kq.fd, 1, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 5) == 0);
  const auto events = wait(kq.fd, 500);
  REQUIRE(events.size() == 1);
  CHECK(events[0].data == 1);
  CHECK(wait(kq.fd, 30).empty());
  CHECK(change(kq.fd, 1, EVFILT_TIMER, EV_DELETE) == -1);
  CHECK(errno == ENOENT);
}

TEST_CASE("EVFILT_TIMER: NOTE_SECONDS, NOTE_USECONDS and NOTE_NSECONDS set the unit") {
  Kq kq;
  REQUIRE(change(kq.fd, 1, EVFILT_TIMER, EV_ADD | EV_ONESHOT, NOTE_SECONDS, 5) == 0);
  REQUIRE(change(kq.fd, 2, EVFILT_TIMER, EV_ADD | EV_ONESHOT, NOTE_USECONDS, 20000) == 0);
  REQUIRE(change(kq.fd, 3, EVFILT_TIMER, EV_ADD | EV_ONESHOT, NOTE_NSECONDS, 30000000) == 0);
  REQUIRE(change(kq.fd, 4, EVFILT_TIMER, EV_ADD | EV_ONESHOT, NOTE_MSECONDS, 40) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(80));
  const auto events = wait(kq.fd);
  CHECK(events.size() == 3);
  CHECK(find(events, 1, EVFILT_TIMER) == nullptr);
  CHECK(change(kq.fd, 1, EVFILT_TIMER, EV_DELETE) == 0);
  CHECK(change(kq.fd, 5, EVFILT_TIMER, EV_ADD, NOTE_SECONDS | NOTE_USECONDS, 1) == -1);
  CHECK(errno == EINVAL);
}

TEST_CASE("EVFILT_TIMER: re-adding a timer restarts it") {
  Kq kq;
  const auto start = Clock::now();
  REQUIRE(change(kq.fd, 1, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 100) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  REQUIRE(change(kq.fd, 1, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 100) == 0);
  const auto events = wait(kq.fd, 1000);
  REQUIRE(events.size() == 1);
  CHECK(Clock::now() - start >= std::chrono::milliseconds(155));
}

TEST_CASE("EVFILT_TIMER: a negative period is EINVAL") {
  Kq kq;
  CHECK(change(kq.fd, 1, EVFILT_TIMER, EV_ADD, 0, -1) == -1);
  CHECK(errno == EINVAL);
  CHECK(change(kq.fd, 1, EVFILT_TIMER, EV_DELETE) == -1);
  CHECK(errno == ENOENT);
}

TEST_CASE("EVFILT_TIMER: a disabled timer keeps counting and reports when enabled") {
  Kq kq;
  REQUIRE(change(kq.fd, 1, EVFILT_TIMER, EV_ADD | EV_DISABLE, 0, 10) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(35));
  CHECK(wait(kq.fd).empty());
  REQUIRE(change(kq.fd, 1, EVFILT_TIMER, EV_ENABLE) == 0);
  const auto events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(events[0].data >= 3);
}

// ---- EVFILT_SIGNAL -----------------------------------------------------------------------------

TEST_CASE("EVFILT_SIGNAL: a signal is recorded even under SIG_IGN, with data >= 1 and EV_CLEAR") {
  Kq kq;
  struct sigaction ignore {
  }, old{};
  ignore.sa_handler = SIG_IGN;
  REQUIRE(sigaction(SIGUSR1, &ignore, &old) == 0);
  REQUIRE(change(kq.fd, SIGUSR1, EVFILT_SIGNAL, EV_ADD, 0, 0, &tag1) == 0);
  CHECK(wait(kq.fd).empty());
  raise(SIGUSR1);
  raise(SIGUSR1); // signalfd may coalesce the two: data >= 1, not == 2
  auto events = wait(kq.fd, 500);
  REQUIRE(events.size() == 1);
  CHECK(events[0].ident == static_cast<uintptr_t>(SIGUSR1));
  CHECK(events[0].data >= 1);
  CHECK(events[0].udata == &tag1);
  CHECK((events[0].flags & EV_CLEAR) != 0);
  CHECK(wait(kq.fd).empty());
  raise(SIGUSR1);
  events = wait(kq.fd, 500);
  REQUIRE(events.size() == 1);
  CHECK(events[0].data == 1);
  CHECK(change(kq.fd, SIGUSR1, EVFILT_SIGNAL, EV_DELETE) == 0);
  sigaction(SIGUSR1, &old, nullptr);
}

TEST_CASE("EVFILT_SIGNAL: SIGCHLD under SIG_IGN is not recorded (the child is reaped at once)") {
  Kq kq;
  struct sigaction ignore {
  }, old{};
  ignore.sa_handler = SIG_IGN;
  REQUIRE(sigaction(SIGCHLD, &ignore, &old) == 0);
  REQUIRE(change(kq.fd, SIGCHLD, EVFILT_SIGNAL, EV_ADD) == 0);
  const pid_t pid = forkChild();
  REQUIRE(pid >= 0);
  if (pid == 0) _exit(0);
  CHECK(wait(kq.fd, 100).empty());
  CHECK(change(kq.fd, SIGCHLD, EVFILT_SIGNAL, EV_DELETE) == 0);
  sigaction(SIGCHLD, &old, nullptr);
}

TEST_CASE("EVFILT_SIGNAL: the emulator blocks the signal and puts the mask back on EV_DELETE") {
  Kq kq;
  REQUIRE(!blocked(SIGUSR2));
  REQUIRE(change(kq.fd, SIGUSR2, EVFILT_SIGNAL, EV_ADD) == 0);
  CHECK(blocked(SIGUSR2)); // an emulator artefact: signalfd sees only blocked signals
  REQUIRE(change(kq.fd, SIGUSR2, EVFILT_SIGNAL, EV_DELETE) == 0);
  CHECK(!blocked(SIGUSR2));
  // A signal the application had blocked itself stays blocked
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &one, nullptr);
  REQUIRE(change(kq.fd, SIGUSR2, EVFILT_SIGNAL, EV_ADD) == 0);
  REQUIRE(change(kq.fd, SIGUSR2, EVFILT_SIGNAL, EV_DELETE) == 0);
  CHECK(blocked(SIGUSR2));
  pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
  // And closing the kq restores it too (when its state is dropped: at the next kqueue())
  const int other = kqueue();
  REQUIRE(change(other, SIGUSR2, EVFILT_SIGNAL, EV_ADD) == 0);
  CHECK(blocked(SIGUSR2));
  ::close(other);
  Kq next;
  CHECK(!blocked(SIGUSR2));
}

// ---- EVFILT_PROC -------------------------------------------------------------------------------

TEST_CASE("EVFILT_PROC: NOTE_EXIT reports a child's exit once, with its wait status, unreaped") {
  Kq kq;
  int gate[2];
  REQUIRE(pipe2(gate, O_CLOEXEC) == 0);
  const pid_t pid = forkChild();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(gate[1]);
    char c;
    [[maybe_unused]] ssize_t n = ::read(gate[0], &c, 1);
    _exit(3);
  }
  ::close(gate[0]);
  REQUIRE(change(kq.fd, pid, EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, &tag1) == 0);
  CHECK(wait(kq.fd, 20).empty()); // still running
  ::close(gate[1]);
  const auto events = wait(kq.fd, 2000);
  REQUIRE(events.size() == 1);
  CHECK(events[0].ident == static_cast<uintptr_t>(pid));
  CHECK((events[0].fflags & NOTE_EXIT) != 0);
  CHECK((events[0].flags & EV_EOF) != 0);
  CHECK(events[0].udata == &tag1);
  CHECK(WIFEXITED(static_cast<int>(events[0].data)));
  CHECK(WEXITSTATUS(static_cast<int>(events[0].data)) == 3);
  CHECK(wait(kq.fd, 20).empty());
  CHECK(change(kq.fd, pid, EVFILT_PROC, EV_DELETE) == -1); // gone with its event
  CHECK(errno == ENOENT);
  int status = 0;
  CHECK(waitpid(pid, &status, WNOHANG) == pid); // the emulator did not reap it
  CHECK(WEXITSTATUS(status) == 3);
}

TEST_CASE("EVFILT_PROC: a child that exited but is not reaped still exists and is reported at "
          "once; a killed one reports its signal") {
  Kq kq;
  const pid_t pid = forkChild();
  REQUIRE(pid >= 0);
  if (pid == 0) pause();
  REQUIRE(kill(pid, SIGKILL) == 0);
  siginfo_t info{};
  REQUIRE(waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT) == 0);
  REQUIRE(change(kq.fd, pid, EVFILT_PROC, EV_ADD, NOTE_EXIT) == 0);
  const auto events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(WIFSIGNALED(static_cast<int>(events[0].data)));
  CHECK(WTERMSIG(static_cast<int>(events[0].data)) == SIGKILL);
  REQUIRE(waitpid(pid, nullptr, 0) == pid);
}

TEST_CASE("EVFILT_PROC: a pid that does not exist is ESRCH") {
  Kq kq;
  const pid_t pid = forkChild();
  REQUIRE(pid >= 0);
  if (pid == 0) _exit(0);
  REQUIRE(waitpid(pid, nullptr, 0) == pid);
  CHECK(change(kq.fd, pid, EVFILT_PROC, EV_ADD, NOTE_EXIT) == -1);
  CHECK(errno == ESRCH);
}

// ---- EVFILT_USER -------------------------------------------------------------------------------

TEST_CASE("EVFILT_USER: never fires by itself; NOTE_TRIGGER fires it with its udata") {
  Kq kq;
  REQUIRE(change(kq.fd, 42, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, &tag1) == 0);
  CHECK(wait(kq.fd, 20).empty());
  REQUIRE(change(kq.fd, 42, EVFILT_USER, 0, NOTE_TRIGGER, 0, &tag1) == 0);
  const auto events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(events[0].ident == 42u);
  CHECK(events[0].udata == &tag1);
  // Every change replaces udata, a trigger too (kern_event.c), unless EV_KEEPUDATA
  REQUIRE(change(kq.fd, 42, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr) == 0);
  CHECK(wait(kq.fd).at(0).udata == nullptr);
  REQUIRE(change(kq.fd, 42, EVFILT_USER, 0, NOTE_TRIGGER, 0, &tag2) == 0);
  REQUIRE(change(kq.fd, 42, EVFILT_USER, EV_KEEPUDATA, NOTE_TRIGGER, 0, nullptr) == 0);
  CHECK(wait(kq.fd).at(0).udata == &tag2);
  CHECK(change(kq.fd, 43, EVFILT_USER, 0, NOTE_TRIGGER) == -1); // no such registration
  CHECK(errno == ENOENT);
}

TEST_CASE("EVFILT_USER: with EV_CLEAR each trigger is consumed once; without, it keeps firing") {
  Kq kq;
  REQUIRE(change(kq.fd, 1, EVFILT_USER, EV_ADD | EV_CLEAR) == 0);
  REQUIRE(change(kq.fd, 2, EVFILT_USER, EV_ADD) == 0);
  REQUIRE(change(kq.fd, 1, EVFILT_USER, 0, NOTE_TRIGGER) == 0);
  REQUIRE(change(kq.fd, 2, EVFILT_USER, 0, NOTE_TRIGGER) == 0);
  CHECK(wait(kq.fd).size() == 2);
  auto events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(events[0].ident == 2u);
  CHECK(wait(kq.fd).size() == 1);
  REQUIRE(change(kq.fd, 2, EVFILT_USER, EV_DISABLE) == 0);
  CHECK(wait(kq.fd).empty());
}

TEST_CASE("EVFILT_USER: fflags combine with NOTE_FFOR, NOTE_FFAND and NOTE_FFCOPY") {
  Kq kq;
  REQUIRE(change(kq.fd, 1, EVFILT_USER, EV_ADD | EV_CLEAR, NOTE_FFCOPY | 0x5) == 0);
  REQUIRE(change(kq.fd, 1, EVFILT_USER, 0, NOTE_TRIGGER | NOTE_FFOR | 0x12) == 0);
  auto events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(events[0].fflags == 0x17u);
  REQUIRE(change(kq.fd, 1, EVFILT_USER, 0, NOTE_TRIGGER | NOTE_FFAND | 0x6) == 0);
  events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(events[0].fflags == 0x6u);
  REQUIRE(change(kq.fd, 1, EVFILT_USER, 0, NOTE_TRIGGER | NOTE_FFCOPY | 0x100) == 0);
  events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(events[0].fflags == 0x100u);
  REQUIRE(change(kq.fd, 1, EVFILT_USER, 0, NOTE_TRIGGER | NOTE_FFNOP | 0xff) == 0);
  events = wait(kq.fd);
  REQUIRE(events.size() == 1);
  CHECK(events[0].fflags == 0x100u);
}

TEST_CASE("EVFILT_USER: NOTE_TRIGGER from another thread wakes a kevent waiting with no timeout") {
  Kq kq;
  REQUIRE(change(kq.fd, 1, EVFILT_USER, EV_ADD | EV_CLEAR) == 0);
  std::atomic<int> triggers{0};
  std::thread other([&] {
    for (int i = 0; i < 20; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      // Changes on the same kq from a second thread race the waiter's own calls
      CHECK(change(kq.fd, 100 + i, EVFILT_USER, EV_ADD) == 0);
      CHECK(change(kq.fd, 100 + i, EVFILT_USER, EV_DELETE) == 0);
    }
    triggers = 1;
    CHECK(change(kq.fd, 1, EVFILT_USER, 0, NOTE_TRIGGER) == 0);
  });
  struct kevent out[4];
  int n = 0;
  {
    Watchdog watchdog(3000);
    while (n == 0)
      n = kevent(kq.fd, nullptr, 0, out, 4, nullptr);
  }
  other.join();
  CHECK(triggers == 1);
  REQUIRE(n == 1);
  CHECK(out[0].ident == 1u);
}
