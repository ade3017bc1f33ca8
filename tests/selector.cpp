// Selector<PData>: the selector contract (include/asyncdispatch/selector.hpp), driven directly on a
// fresh Selector through the SelectorBackend functions only, so that this file runs unchanged on
// every selector backend (epoll and poll natively, kqueue and event ports against their
// emulators). It is a porter's first test: the loop and the socket calls are not involved.
// expectEvents (mio's expect_events) states what one wait must report; every case leaves the
// descriptors open before it as they were (NoDescriptorLeak) and its selector empty.
//
// What a backend may legitimately do differently, and is allowed for here:
//  - a descriptor ready for Read and Write may come as one key or as two (kqueue has a filter
//    for each), and kernels may report over several waits: expectEvents merges the keys of each
//    descriptor over its waits until the expected events are all there or the timeout passes;
//  - a peer's close may show as Read (the end of stream), Error (a hang-up, errorCode
//    ECONNRESET or 0) or both: the loop runs the read callbacks for either, and they see the end;
//  - the kernel object behind a timer, signal, process or event key differs (a timerfd, a
//    kqueue ident, a port_send source...): only its key number is used, never its kind;
//  - selectInto may return no key before its timeout (EINTR): the waits here retry until their
//    deadline, and the timeouts are checked within loose bounds;
//  - which of more ready descriptors than the span holds are reported is the backend's choice;
//  - a signal raised while watched may stay pending in a kqueue backend and reach the restored
//    handler after unregister: only the handler's calls while watched are counted;
//  - dump prints the backend's own kernel handle: only "fds:" and the key lines are checked.
// Windows' IOCP backend has no Selector: there the whole file is compiled out.
#if !defined(_WIN32)
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <initializer_list>
#include <map>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

#if defined(_WIN32)
[[maybe_unused]] const bool selectorCasesOut = testsupport::compiledOut(
    "tests/selector.cpp: its 21 cases on Selector<PData>",
    "the IOCP backend has no Selector: it takes completions, not readiness");
#else
namespace {

std::string listed(const std::vector<int>& fds) {
  std::string text;
  for (int fd : fds)
    text += (text.empty() ? "" : " ") + std::to_string(fd);
  return text;
}

// Declared first in a case, so that it checks last: the descriptors open when the case ends
// (its selector and sockets gone) are those open when it began.
struct NoDescriptorLeak {
  std::vector<int> before = openDescriptors();
  NoDescriptorLeak() = default;
  NoDescriptorLeak(const NoDescriptorLeak&) = delete;
  NoDescriptorLeak& operator=(const NoDescriptorLeak&) = delete;
  ~NoDescriptorLeak() {
    const std::vector<int> after = openDescriptors();
    CHECK_MESSAGE(after == before,
                  "open before: " << listed(before) << "; after: " << listed(after));
  }
};

void setNonBlocking(int fd) {
  REQUIRE(::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
  REQUIRE(::fcntl(fd, F_SETFD, FD_CLOEXEC) == 0);
}

// A connected AF_UNIX stream pair, non-blocking, closed by the destructor: a is the side under
// the selector, b the peer.
struct SocketPair {
  int a = -1;
  int b = -1;
  SocketPair() {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    a = sv[0];
    b = sv[1];
    setNonBlocking(a);
    setNonBlocking(b);
  }
  SocketPair(const SocketPair&) = delete;
  SocketPair& operator=(const SocketPair&) = delete;
  ~SocketPair() {
    closeA();
    closeB();
  }
  void closeA() {
    if (a >= 0) ::close(std::exchange(a, -1));
  }
  void closeB() {
    if (b >= 0) ::close(std::exchange(b, -1));
  }
};

void writeAll(int fd, const std::string& data) {
  REQUIRE(sendNoSigpipe(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
}

// Reads what fd has until it would block (or the end of stream).
std::string readAll(int fd) {
  std::string data;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    data.append(buffer, static_cast<std::size_t>(n));
  }
  return data;
}

// Writes to fd until its send buffer is full; returns how much went in.
std::size_t fill(int fd) {
  const std::string chunk(65536, 'x');
  std::size_t total = 0;
  for (;;) {
    const ssize_t n = sendNoSigpipe(fd, chunk.data(), chunk.size());
    if (n < 0) {
      REQUIRE((errno == EAGAIN || errno == EWOULDBLOCK));
      return total;
    }
    total += static_cast<std::size_t>(n);
  }
}

// The data a case registers: its fd field is a marker that getData must give back.
PData dataFor(int marker) {
  PData data;
  data.fd = AsyncFD(marker);
  return data;
}

// Whether every event of part is in set.
bool includes(EventSet set, EventSet part) {
  for (int i = 0; i <= static_cast<int>(Event::Finished); ++i) {
    const auto e = static_cast<Event>(i);
    if (part.contains(e) && !set.contains(e)) return false;
  }
  return true;
}

EventSet unite(EventSet a, EventSet b) {
  for (int i = 0; i <= static_cast<int>(Event::Finished); ++i) {
    if (b.contains(static_cast<Event>(i))) a.incl(static_cast<Event>(i));
  }
  return a;
}

std::string describe(const ReadyKey& key) {
  std::ostringstream os;
  os << "fd " << key.fd << " " << key.events << " errorCode " << key.errorCode;
  return os.str();
}

struct Expected {
  SocketHandle fd;
  EventSet events;
};

// mio's expect_events: waits (selectInto, again and again: a kernel may report over several
// waits) until each expected descriptor has been reported with its events, or timeoutMs have
// passed; then each must have been reported with exactly those events, merged over its keys,
// and nothing else may have been. An empty list waits the whole timeout and expects nothing.
// Returns the keys reported, in order.
std::vector<ReadyKey> expectEvents(Selector<PData>& s, int timeoutMs,
                                   std::initializer_list<Expected> expected) {
  std::vector<ReadyKey> reported;
  std::map<SocketHandle, EventSet> seen;
  const auto isExpected = [&](SocketHandle fd) {
    return std::any_of(expected.begin(), expected.end(),
                       [&](const Expected& e) { return e.fd == fd; });
  };
  const auto allSeen = [&] {
    return expected.size() > 0 && std::all_of(expected.begin(), expected.end(), [&](const auto& e) {
             return includes(seen[e.fd], e.events);
           });
  };
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  std::array<ReadyKey, 64> keys;
  do {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    const int n = s.selectInto(static_cast<int>(std::max<long long>(0, left.count())), keys);
    REQUIRE(n >= 0);
    REQUIRE(n <= static_cast<int>(keys.size()));
    for (int i = 0; i < n; ++i) {
      const ReadyKey& key = keys[static_cast<std::size_t>(i)];
      reported.push_back(key);
      CHECK_MESSAGE(isExpected(key.fd), "unexpected key: " << describe(key));
      if (!key.events.contains(Event::Error))
        CHECK_MESSAGE(key.errorCode == 0, "errorCode without Error: " << describe(key));
      seen[key.fd] = unite(seen[key.fd], key.events);
    }
  } while (!allSeen() && Clock::now() < deadline);
  for (const Expected& e : expected)
    CHECK_MESSAGE(seen[e.fd] == e.events,
                  "fd " << e.fd << ": expected " << e.events << ", reported " << seen[e.fd]);
  return reported;
}

// Waits until fd is reported, at most timeoutMs, and returns the events of its keys merged (with
// the last errorCode); any other descriptor's key fails the check.
ReadyKey eventsOf(Selector<PData>& s, SocketHandle fd, int timeoutMs) {
  ReadyKey merged{fd, {}, 0};
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  std::array<ReadyKey, 64> keys;
  while (merged.events.empty() && Clock::now() < deadline) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    const int n = s.selectInto(static_cast<int>(std::max<long long>(0, left.count())), keys);
    REQUIRE(n >= 0);
    for (int i = 0; i < n; ++i) {
      const ReadyKey& key = keys[static_cast<std::size_t>(i)];
      CHECK_MESSAGE(key.fd == fd, "unexpected key: " << describe(key));
      if (key.fd != fd) continue;
      merged.events = unite(merged.events, key.events);
      merged.errorCode = key.errorCode;
    }
  }
  return merged;
}

// Every case ends with its selector empty: nothing armed, no key in the table.
void checkSelectorEmpty(const Selector<PData>& s) {
  CHECK(s.count == 0);
  int keys = 0;
  for (const auto& key : s.fds)
    keys += key.fd != InvalidIdent ? 1 : 0;
  CHECK(keys == 0);
}

bool blocked(int signal) {
  sigset_t current;
  pthread_sigmask(SIG_BLOCK, nullptr, &current);
  return sigismember(&current, signal) == 1;
}

void setBlocked(int signal, bool block) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, signal);
  REQUIRE(pthread_sigmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, nullptr) == 0);
}

std::atomic<int> handledSignals{0};
void countSignal(int) {
  handledSignals.fetch_add(1);
}

// Installs countSignal for signal for the case's duration, so that a disposition the selector
// changed shows, and a signal it let through counts instead of killing the suite.
struct CountingHandler {
  int signal;
  struct sigaction old {};
  explicit CountingHandler(int sig) : signal(sig) {
    struct sigaction action {};
    action.sa_handler = countSignal;
    sigemptyset(&action.sa_mask);
    REQUIRE(sigaction(signal, &action, &old) == 0);
    handledSignals = 0;
  }
  CountingHandler(const CountingHandler&) = delete;
  CountingHandler& operator=(const CountingHandler&) = delete;
  ~CountingHandler() { sigaction(signal, &old, nullptr); }
  static bool installed(int signal) {
    struct sigaction now {};
    sigaction(signal, nullptr, &now);
    return now.sa_handler == countSignal;
  }
};

// A forked child that exits with `code` once release() closes the pipe it reads; the destructor
// releases it and reaps it if the case has not, so no child outlives its case.
struct GatedChild {
  int pid = -1;
  int gate = -1; // the write end; the child exits when it is closed
  explicit GatedChild(int code) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    REQUIRE(::fcntl(fds[0], F_SETFD, FD_CLOEXEC) == 0);
    REQUIRE(::fcntl(fds[1], F_SETFD, FD_CLOEXEC) == 0);
    pid = ::fork();
    if (pid == 0) {
      ::close(fds[1]);
      char byte;
      while (::read(fds[0], &byte, 1) < 0 && errno == EINTR) {
      }
      ::_exit(code);
    }
    ::close(fds[0]);
    gate = fds[1];
    if (pid < 0) ::close(std::exchange(gate, -1));
    REQUIRE(pid > 0);
  }
  GatedChild(const GatedChild&) = delete;
  GatedChild& operator=(const GatedChild&) = delete;
  ~GatedChild() {
    release();
    if (pid > 0) ::waitpid(pid, nullptr, 0);
  }
  void release() {
    if (gate >= 0) ::close(std::exchange(gate, -1));
  }
  // waitpid's status of the exited child (which the selector must not have reaped).
  int reap() {
    int status = 0;
    const int waited = ::waitpid(std::exchange(pid, -1), &status, 0);
    CHECK(waited > 0);
    return status;
  }
};

} // namespace

TEST_CASE("registerHandle: an empty event set registers the descriptor but arms nothing, even "
          "when it is readable, writable or hung up") {
  NoDescriptorLeak leaks;
  SocketPair pair;
  Selector<PData> s;
  writeAll(pair.b, "x");
  s.registerHandle(pair.a, {}, dataFor(pair.a));
  CHECK(s.contains(pair.a));
  CHECK(s.count == 0);
  CHECK(s.fds[pair.a].events == EventSet{});
  expectEvents(s, 50, {});
  // A hang-up is reported by some kernels whatever the interest (epoll's EPOLLHUP, poll's
  // POLLHUP): with nothing armed, the backend must not pass it on.
  pair.closeB();
  expectEvents(s, 50, {});
  s.unregister(pair.a);
  checkSelectorEmpty(s);
}

TEST_CASE("updateHandle: each new event set replaces the last, {Read}, {Write}, {Read, Write}, "
          "and {} reports nothing") {
  NoDescriptorLeak leaks;
  SocketPair pair;
  Selector<PData> s;
  writeAll(pair.b, "x"); // a is readable, and writable all along
  s.registerHandle(pair.a, {}, dataFor(pair.a));

  s.updateHandle(pair.a, Event::Read);
  CHECK(s.count == 1);
  CHECK(s.fds[pair.a].events == EventSet(Event::Read));
  expectEvents(s, 2000, {{pair.a, Event::Read}});

  s.updateHandle(pair.a, Event::Write);
  CHECK(s.count == 1);
  CHECK(s.fds[pair.a].events == EventSet(Event::Write));
  expectEvents(s, 2000, {{pair.a, Event::Write}});

  s.updateHandle(pair.a, {Event::Read, Event::Write});
  CHECK(s.count == 1);
  expectEvents(s, 2000, {{pair.a, {Event::Read, Event::Write}}});

  s.updateHandle(pair.a, {});
  CHECK(s.count == 0);
  CHECK(s.contains(pair.a));
  expectEvents(s, 50, {});

  s.updateHandle(pair.a, Event::Read); // and it can be armed again
  expectEvents(s, 2000, {{pair.a, Event::Read}});
  // Disarmed after being armed, a hang-up is not reported either (epoll's EPOLLHUP and poll's
  // POLLHUP come whatever the interest; epoll here still holds the lazily kept EPOLLIN).
  s.updateHandle(pair.a, {});
  pair.closeB();
  expectEvents(s, 50, {});
  s.unregister(pair.a);
  checkSelectorEmpty(s);
}

TEST_CASE("unregister: stops delivery and forgets the descriptor, which stays open and can be "
          "registered again") {
  NoDescriptorLeak leaks;
  SocketPair pair;
  Selector<PData> s;
  writeAll(pair.b, "x");
  s.registerHandle(pair.a, Event::Read, dataFor(pair.a));
  expectEvents(s, 2000, {{pair.a, Event::Read}});
  s.unregister(pair.a);
  CHECK_FALSE(s.contains(pair.a));
  CHECK(s.count == 0);
  expectEvents(s, 50, {});
  CHECK(isOpen(pair.a)); // the selector forgets a descriptor; closing it is the caller's
  s.registerHandle(pair.a, Event::Read, dataFor(pair.a));
  CHECK(s.count == 1);
  expectEvents(s, 2000, {{pair.a, Event::Read}});
  s.unregister(pair.a);
  checkSelectorEmpty(s);
}

TEST_CASE("registerHandle, updateHandle, unregister and getData: misuse throws ValueError naming "
          "the call and the descriptor, and changes nothing") {
  NoDescriptorLeak leaks;
  SocketPair pair;
  Selector<PData> s;
  const AsyncFD a = AsyncFD(pair.a);
  const AsyncFD b = AsyncFD(pair.b);
  s.registerHandle(pair.a, Event::Read, dataFor(7));

  const std::string twice =
      valueErrorOf([&] { s.registerHandle(pair.a, Event::Write, dataFor(8)); });
  CHECK(has(twice, "registerHandle"));
  CHECK(has(twice, fdText(a)));
  // The first registration is untouched.
  CHECK(s.count == 1);
  CHECK(s.fds[pair.a].events == EventSet(Event::Read));
  CHECK(s.getData(pair.a).fd == AsyncFD(7));

  // b was never registered; a no longer is.
  s.unregister(pair.a);
  for (const AsyncFD fd : {a, b}) {
    const auto h = static_cast<SocketHandle>(fd);
    const std::string unregistered = valueErrorOf([&] { s.unregister(h); });
    CHECK(has(unregistered, "unregister"));
    CHECK(has(unregistered, fdText(fd)));
    const std::string updated = valueErrorOf([&] { s.updateHandle(h, Event::Read); });
    CHECK(has(updated, "updateHandle"));
    CHECK(has(updated, fdText(fd)));
    const std::string data = valueErrorOf([&] { (void)s.getData(h); });
    CHECK(has(data, "getData"));
    CHECK(has(data, fdText(fd)));
    CHECK_FALSE(s.contains(h));
  }
  checkSelectorEmpty(s);
}

TEST_CASE("registerSignal and registerProcess: a bad signal or pid throws ValueError naming the "
          "call and the value, and registers nothing") {
  NoDescriptorLeak leaks;
  Selector<PData> s;
  for (const int signal : {0, -1, SIGKILL, SIGSTOP, 100000}) {
    const std::string message = valueErrorOf([&] { s.registerSignal(signal, dataFor(0)); });
    CHECK(has(message, "registerSignal"));
    CHECK(has(message, std::to_string(signal)));
  }
  CHECK_FALSE(blocked(SIGKILL));
  for (const int pid : {0, -1, -4242}) {
    const std::string message = valueErrorOf([&] { s.registerProcess(pid, dataFor(0)); });
    CHECK(has(message, "registerProcess"));
    CHECK(has(message, std::to_string(pid)));
  }
  checkSelectorEmpty(s);
}

TEST_CASE("selectInto: a socketpair reports Read once the peer writes, not before, and until "
          "the data is drained") {
  NoDescriptorLeak leaks;
  SocketPair pair;
  Selector<PData> s;
  s.registerHandle(pair.a, Event::Read, dataFor(pair.a));
  expectEvents(s, 50, {});
  writeAll(pair.b, "hello");
  expectEvents(s, 2000, {{pair.a, Event::Read}});
  // Level-triggered: unread data is reported again (an event-ports backend must re-associate).
  expectEvents(s, 2000, {{pair.a, Event::Read}});
  CHECK(readAll(pair.a) == "hello");
  expectEvents(s, 50, {});
  writeAll(pair.b, "again");
  expectEvents(s, 2000, {{pair.a, Event::Read}});
  CHECK(readAll(pair.a) == "again");
  s.unregister(pair.a);
  checkSelectorEmpty(s);
}

TEST_CASE("selectInto: a socketpair reports Write while its send buffer has room, not once it "
          "is full, and again once the peer reads") {
  NoDescriptorLeak leaks;
  SocketPair pair;
  Selector<PData> s;
  s.registerHandle(pair.a, Event::Write, dataFor(pair.a));
  expectEvents(s, 2000, {{pair.a, Event::Write}});
  const std::size_t queued = fill(pair.a);
  CHECK(queued > 0);
  expectEvents(s, 50, {});
  CHECK(readAll(pair.b).size() == queued);
  expectEvents(s, 2000, {{pair.a, Event::Write}});
  s.unregister(pair.a);
  checkSelectorEmpty(s);
}

TEST_CASE("selectInto: a peer that closes is reported as Read (end of stream) or Error, and a "
          "read then sees the end") {
  NoDescriptorLeak leaks;
  SocketPair pair;
  Selector<PData> s;
  s.registerHandle(pair.a, Event::Read, dataFor(pair.a));
  pair.closeB();
  const ReadyKey key = eventsOf(s, pair.a, 2000);
  INFO("reported: " << describe(key));
  // The loop runs the read callbacks for Read and for an Error alone: either way they see EOF.
  CHECK((key.events.contains(Event::Read) || key.events.contains(Event::Error)));
  CHECK(includes({Event::Read, Event::Error}, key.events));
  if (key.events.contains(Event::Error)) CHECK((key.errorCode == 0 || key.errorCode == ECONNRESET));
  char byte = 0;
  CHECK(::recv(pair.a, &byte, 1, 0) == 0);
  s.unregister(pair.a);
  checkSelectorEmpty(s);
}

TEST_CASE("selectInto: what a peer wrote before it closed is reported as Read, and read before "
          "the end of stream") {
  NoDescriptorLeak leaks;
  SocketPair pair;
  Selector<PData> s;
  s.registerHandle(pair.a, Event::Read, dataFor(pair.a));
  writeAll(pair.b, "bye");
  pair.closeB();
  const ReadyKey key = eventsOf(s, pair.a, 2000);
  INFO("reported: " << describe(key));
  CHECK(key.events.contains(Event::Read));
  CHECK(includes({Event::Read, Event::Error}, key.events));
  char buffer[16];
  CHECK(::recv(pair.a, buffer, sizeof buffer, 0) == 3);
  CHECK(::recv(pair.a, buffer, sizeof buffer, 0) == 0);
  s.unregister(pair.a);
  checkSelectorEmpty(s);
}

TEST_CASE("selectInto: a timeout of 0 returns at once, and a timeout of 100 ms waits about that "
          "long") {
  NoDescriptorLeak leaks;
  SocketPair pair;
  Selector<PData> s;
  s.registerHandle(pair.a, Event::Read, dataFor(pair.a)); // armed, never ready
  std::array<ReadyKey, 64> keys;
  Clock::time_point start = Clock::now();
  CHECK(s.selectInto(0, keys) == 0);
  CHECK(msSince(start) < 500);
  start = Clock::now();
  CHECK(s.selectInto(100, keys) == 0);
  const double waited = msSince(start);
  CHECK(waited >= 90);
  CHECK(waited < 2000);
  s.unregister(pair.a);
  checkSelectorEmpty(s);
}

TEST_CASE("selectInto: fills at most as many keys as the span it is given holds") {
  NoDescriptorLeak leaks;
  std::vector<std::unique_ptr<SocketPair>> pairs;
  Selector<PData> s;
  for (int i = 0; i < 5; ++i) {
    pairs.push_back(std::make_unique<SocketPair>());
    writeAll(pairs.back()->b, "x");
    s.registerHandle(pairs.back()->a, Event::Read, dataFor(pairs.back()->a));
  }
  std::array<ReadyKey, 8> keys;
  keys.fill(ReadyKey{InvalidIdent, Event::Vnode, -7}); // what selectInto must not touch
  const int n = s.selectInto(2000, std::span<ReadyKey>(keys.data(), 2));
  CHECK(n >= 1);
  CHECK(n <= 2);
  for (std::size_t i = 2; i < keys.size(); ++i) {
    CHECK(keys[i].fd == InvalidIdent);
    CHECK(keys[i].errorCode == -7);
  }
  for (const auto& pair : pairs)
    s.unregister(pair->a);
  pairs.clear();
  checkSelectorEmpty(s);
}

TEST_CASE("registerTimer: a oneshot timer reports {Timer, Oneshot, Finished} once and is then "
          "disarmed until unregistered") {
  NoDescriptorLeak leaks;
  Selector<PData> s;
  const Clock::time_point start = Clock::now();
  const SocketHandle t = s.registerTimer(30, true, dataFor(1));
  CHECK(s.contains(t));
  CHECK(s.count == 1);
  CHECK(s.fds[t].events == EventSet{Event::Timer, Event::Oneshot});
  expectEvents(s, 2000, {{t, {Event::Timer, Event::Oneshot, Event::Finished}}});
  CHECK(msSince(start) >= 25); // not early (the bound is loose: kernels round)
  CHECK(s.count == 0);         // disarmed...
  CHECK(s.contains(t));        // ...but kept until unregistered, as in Nim
  expectEvents(s, 80, {});
  s.unregister(t);
  CHECK_FALSE(s.contains(t));
  checkSelectorEmpty(s);
}

TEST_CASE("registerTimer: a periodic timer reports {Timer} again and again until unregistered") {
  NoDescriptorLeak leaks;
  Selector<PData> s;
  const Clock::time_point start = Clock::now();
  const SocketHandle t = s.registerTimer(10, false, dataFor(1));
  for (int i = 0; i < 3; ++i) {
    expectEvents(s, 2000, {{t, Event::Timer}});
    CHECK(s.count == 1);
  }
  CHECK(msSince(start) >= 25);
  CHECK(s.fds[t].events == EventSet(Event::Timer));
  s.unregister(t);
  CHECK_FALSE(s.contains(t));
  expectEvents(s, 40, {});
  checkSelectorEmpty(s);
}

TEST_CASE("registerEvent: a trigger from another thread wakes a selectInto waiting without a "
          "timeout") {
  NoDescriptorLeak leaks;
  SelectEvent ev;
  Selector<PData> s;
  s.registerEvent(ev, dataFor(1));
  const SocketHandle fd = ev.getFd();
  CHECK(s.contains(fd));
  CHECK(s.count == 1);
  CHECK(s.fds[fd].events == EventSet(Event::User));
  // A lost wake-up ends at this timer instead of hanging the suite.
  const SocketHandle watchdog = s.registerTimer(5000, true, dataFor(2));
  const Clock::time_point start = Clock::now();
  std::array<ReadyKey, 64> keys;
  int n = 0;
  {
    JoiningThread trigger([&ev] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      ev.trigger();
    });
    while (n == 0 && msSince(start) < 6000) // 0 keys: a signal interrupted the wait
      n = s.selectInto(-1, keys);
  }
  const double waited = msSince(start);
  REQUIRE(n == 1);
  CHECK(keys[0].fd == fd);
  CHECK(keys[0].events == EventSet(Event::User));
  CHECK(waited >= 40);
  CHECK(waited < 4000);
  s.unregister(watchdog);
  s.unregister(ev);
  CHECK_FALSE(s.contains(fd));
  checkSelectorEmpty(s);
}

TEST_CASE("registerEvent: several triggers before selectInto coalesce into one report, and "
          "none is reported once unregistered") {
  NoDescriptorLeak leaks;
  SelectEvent ev;
  Selector<PData> s;
  s.registerEvent(ev, dataFor(1));
  const SocketHandle fd = ev.getFd();
  ev.trigger();
  ev.trigger();
  JoiningThread([&ev] {
    ev.trigger();
    ev.trigger();
  }).join();
  const std::vector<ReadyKey> keys = expectEvents(s, 2000, {{fd, Event::User}});
  CHECK(keys.size() == 1);
  expectEvents(s, 50, {});
  CHECK(s.count == 1); // a user event stays armed
  ev.trigger();
  expectEvents(s, 2000, {{fd, Event::User}});
  s.unregister(ev);
  CHECK(s.count == 0);
  ev.trigger(); // the event still works; the selector no longer watches it
  expectEvents(s, 50, {});
  checkSelectorEmpty(s);
}

TEST_CASE("registerSignal: a raise()d signal is reported instead of handled, and unregister "
          "restores the thread's mask and the disposition") {
  NoDescriptorLeak leaks;
  CountingHandler handler(SIGUSR2);
  REQUIRE_FALSE(blocked(SIGUSR2));
  {
    Selector<PData> s;
    const SocketHandle fd = s.registerSignal(SIGUSR2, dataFor(1));
    CHECK(s.contains(fd));
    CHECK(s.count == 1);
    CHECK(s.fds[fd].events == EventSet(Event::Signal));
    expectEvents(s, 50, {});
    REQUIRE(raise(SIGUSR2) == 0);
    expectEvents(s, 2000, {{fd, Event::Signal}});
    CHECK(handledSignals == 0); // the selector took it
    expectEvents(s, 50, {});    // once: what was delivered has been consumed
    s.unregister(fd);
    CHECK_FALSE(s.contains(fd));
    // A kqueue backend may leave the raised instance pending, which the handler then takes as
    // the mask is restored: what the handler counts from here on is not checked.
    CHECK_FALSE(blocked(SIGUSR2));
    CHECK(CountingHandler::installed(SIGUSR2));
    checkSelectorEmpty(s);
  }
  // A signal the thread had blocked already stays blocked after unregister.
  setBlocked(SIGUSR2, true);
  {
    Selector<PData> s;
    const SocketHandle fd = s.registerSignal(SIGUSR2, dataFor(1));
    CHECK(blocked(SIGUSR2));
    s.unregister(fd);
    CHECK(blocked(SIGUSR2));
    CHECK(CountingHandler::installed(SIGUSR2));
    checkSelectorEmpty(s);
  }
  setBlocked(SIGUSR2, false);
}

TEST_CASE("registerProcess: a forked child's exit is reported once with Finished, and the child "
          "is left for waitpid") {
  NoDescriptorLeak leaks;
  GatedChild child(7);
  Selector<PData> s;
  const SocketHandle fd = s.registerProcess(child.pid, dataFor(1));
  CHECK(s.contains(fd));
  CHECK(s.count == 1);
  CHECK(s.fds[fd].events == EventSet(Event::Process));
  expectEvents(s, 50, {}); // still running
  child.release();
  expectEvents(s, 5000, {{fd, {Event::Process, Event::Finished}}});
  CHECK(s.count == 0); // disarmed, kept until unregistered
  CHECK(s.contains(fd));
  expectEvents(s, 50, {});
  s.unregister(fd);
  CHECK_FALSE(s.contains(fd));
  const int status = child.reap(); // the selector did not reap it
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 7);
  checkSelectorEmpty(s);
}

TEST_CASE("isCurrent: a reported key stays current through updateHandle, and is not current "
          "once its descriptor is closed and the number registered again within the batch") {
  NoDescriptorLeak leaks;
  SocketPair pair;
  Selector<PData> s;
  const int number = pair.a;
  writeAll(pair.b, "x");
  s.registerHandle(number, Event::Read, dataFor(1));
  const std::vector<ReadyKey> keys = expectEvents(s, 2000, {{number, Event::Read}});
  REQUIRE_FALSE(keys.empty());
  const ReadyKey key = keys.back();
  CHECK(s.isCurrent(key));
  s.updateHandle(number, {Event::Read, Event::Write}); // the same registration
  CHECK(s.isCurrent(key));
  // A callback earlier in the batch closes it and a new socket takes its number.
  s.unregister(number);
  CHECK_FALSE(s.isCurrent(key));
  pair.closeA();
  int fresh = ::socket(AF_INET, SOCK_DGRAM, 0);
  REQUIRE(fresh >= 0);
  if (fresh != number) {
    const int placed = ::fcntl(fresh, F_DUPFD, number); // the lowest free number from `number`
    ::close(fresh);
    fresh = placed;
  }
  REQUIRE(fresh == number);
  setNonBlocking(fresh);
  s.registerHandle(fresh, Event::Read, dataFor(2));
  CHECK(s.contains(number));
  CHECK_FALSE(s.isCurrent(key));
  CHECK(s.getData(number).fd == AsyncFD(2));
  expectEvents(s, 50, {}); // the old socket's report does not reach the new one
  s.unregister(fresh);
  ::close(fresh);
  checkSelectorEmpty(s);
}

TEST_CASE("getData: returns the data given at registration, for a descriptor, a timer and an "
          "event, and unregister destroys it") {
  NoDescriptorLeak leaks;
  SocketPair pair;
  SelectEvent ev;
  Selector<PData> s;
  const auto owned = std::make_shared<int>(0);
  PData data = dataFor(41);
  data.readCBs.push_back([owned](AsyncFD) { return true; });
  s.registerHandle(pair.a, Event::Read, std::move(data));
  CHECK(s.getData(pair.a).fd == AsyncFD(41));
  CHECK(s.getData(pair.a).readCBs.size() == 1);
  CHECK(s.getData(pair.a).writeCBs.empty());
  CHECK(&s.getData(pair.a) == &s.fds[pair.a].data); // the table's own
  s.getData(pair.a).writeCBs.push_back([](AsyncFD) { return true; });
  CHECK(s.fds[pair.a].data.writeCBs.size() == 1);

  const SocketHandle t = s.registerTimer(10000, true, dataFor(42));
  CHECK(s.getData(t).fd == AsyncFD(42));
  s.registerEvent(ev, dataFor(43));
  CHECK(s.getData(ev.getFd()).fd == AsyncFD(43));

  CHECK(owned.use_count() == 2);
  s.unregister(pair.a);
  CHECK(owned.use_count() == 1);
  s.unregister(t);
  s.unregister(ev);
  checkSelectorEmpty(s);
}

TEST_CASE("dump: prints the fds table with a line for each registered key and its events") {
  NoDescriptorLeak leaks;
  SocketPair pair;
  Selector<PData> s;
  const auto dumped = [&s] {
    std::ostringstream os;
    s.dump(os);
    return os.str();
  };
  const std::string key = "SelectorKey { fd: " + std::to_string(pair.a) + ", ";
  CHECK(has(dumped(), "fds:"));
  CHECK_FALSE(has(dumped(), key));
  s.registerHandle(pair.a, {Event::Read, Event::Write}, dataFor(pair.a));
  const std::string text = dumped();
  CHECK(has(text, "fds:"));
  CHECK(has(text, key + "events: {Read, Write}"));
  s.updateHandle(pair.a, Event::Read);
  CHECK(has(dumped(), key + "events: {Read}"));
  s.unregister(pair.a);
  CHECK_FALSE(has(dumped(), key));
  checkSelectorEmpty(s);
}

TEST_CASE("~Selector: closes the kernel objects of the timer and signal keys still registered, "
          "leaves a registered event's own, and restores the signal mask") {
  NoDescriptorLeak leaks;
  SelectEvent ev;
  const std::vector<int> withEvent = openDescriptors();
  REQUIRE_FALSE(blocked(SIGUSR2));
  {
    Selector<PData> s;
    s.registerTimer(10000, false, dataFor(1));
    s.registerSignal(SIGUSR2, dataFor(2));
    s.registerEvent(ev, dataFor(3));
    CHECK(s.count == 3);
    CHECK(blocked(SIGUSR2));
  }
  const std::vector<int> after = openDescriptors();
  CHECK_MESSAGE(after == withEvent,
                "open before: " << listed(withEvent) << "; after: " << listed(after));
  CHECK_FALSE(blocked(SIGUSR2));
  ev.trigger(); // the event's descriptor is its own: still open
}
#endif
