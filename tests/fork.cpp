// fork(): a child that goes on using the library gets a fresh dispatcher on its first use, and
// nothing it does reaches the parent's kernel state (on epoll the two share the epoll instance and
// every registration on it). Each case forks for real; the child reports with its exit status
// (0 for success, another number naming the check that failed), which the parent checks. Windows
// has no fork().
#if !defined(_WIN32)
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

#if defined(_WIN32)
[[maybe_unused]] const bool forkCasesOut =
    testsupport::compiledOut("tests/fork.cpp: the 3 fork cases", "Windows has no fork()");
#else
namespace {

// Forks; the child runs `child` and _exits with what it returns (an exception is 99), so no
// destructor or atexit handler of the parent's runs twice. stdio is flushed first, so that the
// child does not print the parent's buffered output again.
template <class F>
pid_t forkChild(F&& child) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 99;
    try {
      code = child();
    } catch (...) {
    }
    _exit(code);
  }
  return pid;
}

// The child's exit status, or -1 if it did not exit within 10 s (then it is killed) or was killed
// by a signal.
int exitStatusOf(pid_t pid) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int status = 0;
  for (;;) {
    const pid_t reaped = ::waitpid(pid, &status, WNOHANG);
    if (reaped == pid) break;
    if (reaped < 0 && errno != EINTR) return -1;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A connection of the child's own, made, used and closed with the library's calls only (doctest's
// checks would be lost with the child): what it receives.
std::string echoOverNewConnection() {
  const AsyncFD l = createAsyncNativeSocket();
  bindAddr(l, Port(0), "127.0.0.1");
  listen(l);
  Future<AsyncFD> accepted = accept(l);
  const AsyncFD client = waitFor(dial("127.0.0.1", getLocalAddr(l).second));
  const AsyncFD server = waitFor(accepted);
  waitFor(send(client, std::string("ping")));
  std::string got = waitFor(recv(server, 4));
  closeSocket(client);
  closeSocket(server);
  closeSocket(l);
  return got;
}

extern "C" void noteSignal(int) {}

} // namespace

TEST_CASE("fork: the child's first use finds a fresh dispatcher, and the parent's watchers keep "
          "firing (beyond Nim)") {
  auto [client, server] = connectedPair();
  Future<std::string> got = recv(server, 8); // armed read interest, in the kernel's queue
  int ticks = 0;
  addTimer(5, false, [&](AsyncFD) { return ++ticks == 3; });
  bool triggered = false;
  const AsyncEvent ev = newAsyncEvent();
  addEvent(ev, [&](AsyncFD) {
    triggered = true;
    return true;
  });
  Future<void> nap = sleepAsync(30);
  poll(0); // commits the interest changes a backend keeps for its next wait (kqueue)

  const pid_t pid = forkChild([&, client = client, server = server] {
    // Nothing of the parent's is armed, queued or pending here; its sockets stay registered.
    const PDispatcher p = getGlobalDispatcher();
    const bool idle = !hasPendingOperations() && activeDescriptors() == 0;
    const bool empty = p->timers.empty() && p->callbacks.empty() && p->suspended.empty();
    const bool registered = contains(p, client) && contains(p, server);
    // What would take the parent's interest away if the child still used its kernel queue: the
    // socket its recv waits on leaves the child's dispatcher and is closed (the child's copy).
    closeSocket(server);
    closeSocket(client);
    if (!idle) return 1;
    if (!empty) return 2;
    if (!registered) return 3;
    // The child's own timers and connections work.
    waitFor(sleepAsync(15));
    if (echoOverNewConnection() != "ping") return 4;
    if (hasPendingOperations()) return 5;
    return 0;
  });
  CHECK(exitStatusOf(pid) == 0);

  // The parent's recv, timer, event and sleep still fire, each once.
  waitWithin(send(client, std::string("pong")));
  CHECK(waitWithin(got) == "pong");
  pollUntil([&] { return ticks == 3; });
  trigger(ev);
  pollUntil([&] { return triggered; });
  waitWithin(nap);
  CHECK(ticks == 3);
  close(ev);
  closeSocket(client);
  closeSocket(server);
  checkDispatcherEmpty();
}

TEST_CASE("fork: a child forked by a callback runs a fresh dispatcher from that callback, and the "
          "inherited pass runs nothing more there (beyond Nim)") {
  Future<void> later = sleepAsync(20);
  bool secondRan = false;
  pid_t pid = -1;
  callSoon([&] {
    pid = forkChild([&] {
      // Inside the inherited pass: the parent's timer and queued callback are not the child's,
      // and polling the fresh dispatcher is no nested poll.
      if (hasPendingOperations()) return 1;
      waitFor(sleepAsync(1));
      if (echoOverNewConnection() != "ping") return 2;
      return 0;
    });
  });
  callSoon([&] { secondRan = true; });
  poll(0);
  REQUIRE(pid > 0);
  CHECK(secondRan);
  CHECK(exitStatusOf(pid) == 0);
  waitWithin(later);
  checkDispatcherEmpty();
}

TEST_CASE("fork: in the child, a signal another thread watched has its disposition back, and "
          "the child's own addSignal works (beyond Nim)") {
  struct sigaction note {};
  note.sa_handler = noteSignal;
  sigemptyset(&note.sa_mask);
  struct sigaction before {};
  REQUIRE(sigaction(SIGUSR2, &note, &before) == 0);
  std::atomic<bool> watching{false};
  JoiningThread watcher([&](StopToken stop) {
    addSignal(SIGUSR2, [](AsyncFD) { return false; });
    watching = true;
    while (!stop.stop_requested())
      poll(5);
  });
  while (!watching)
    std::this_thread::yield();

  const pid_t pid = forkChild([] {
    // The watching thread is not in the child: its handler or SIG_IGN must not stay.
    struct sigaction now {};
    sigaction(SIGUSR2, nullptr, &now);
    if (now.sa_handler != noteSignal) return 1;
    // The forking thread watches the signal itself, now that no route or watcher is left.
    int seen = 0;
    addSignal(SIGUSR1, [&](AsyncFD) {
      ++seen;
      return true;
    });
    pthread_kill(pthread_self(), SIGUSR1);
    for (int i = 0; i < 100 && seen == 0; ++i)
      poll(50);
    return seen == 1 ? 0 : 2;
  });
  CHECK(exitStatusOf(pid) == 0);
  watcher.request_stop();
  watcher.join();
  sigaction(SIGUSR2, &before, nullptr);
  checkDispatcherEmpty();
}
#endif
