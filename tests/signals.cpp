// addSignal: signals delivered through the selector (signalfd on Linux), the thread's signal
// mask before, during and after, and misuse. Signals are sent to this thread (raise,
// pthread_kill), so that no other thread can take them. Windows has no POSIX signals (nor has
// Nim's addSignal there): its one case checks that addSignal says so.
#if !defined(_WIN32)
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#endif

#include <cerrno>
#include <sstream>
#include <string>

#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

#if defined(_WIN32)
[[maybe_unused]] const bool posixSignalCasesOut = testsupport::compiledOut(
    "tests/signals.cpp: the 10 POSIX signal cases",
    "Windows has no POSIX signals: a Windows case checks that addSignal says so");
TEST_CASE("addSignal: throws OSError \"not supported on Windows\" and arms nothing (Windows)") {
  for (const int signal : {2, 15, 10}) { // SIGINT, SIGTERM, SIGUSR1's number on Linux
    try {
      addSignal(signal, [](AsyncFD) { return true; });
      FAIL_CHECK("addSignal(" << signal << ") was accepted");
    } catch (const OSError& e) {
      CHECK(e.code().value() == ERROR_NOT_SUPPORTED);
      CHECK(std::string(e.what()) ==
            "addSignal(signal " + std::to_string(signal) + "): not supported on Windows");
    }
  }
  CHECK(activeDescriptors() == 0);
  CHECK_FALSE(hasPendingOperations());
  checkDispatcherEmpty();
}
#else // POSIX signals, masks and sigaction: Windows has none of them
[[maybe_unused]] const bool windowsSignalCaseOut = testsupport::compiledOut(
    "tests/signals.cpp: the Windows case of addSignal throwing \"not supported on Windows\"",
    "addSignal works on POSIX: the 10 cases here test it");
namespace {

bool blocked(int signal) {
  sigset_t current;
  pthread_sigmask(SIG_BLOCK, nullptr, &current);
  return sigismember(&current, signal) == 1;
}

// Held back from its default action while watched: blocked, for a signalfd (epoll) or outside
// the selector's wait (poll); kqueue's EVFILT_SIGNAL needs no mask and records a signal whose
// disposition is SIG_IGN, so there the selector ignores it instead.
bool heldWhileWatched(int signal) {
#if defined(ASYNCDISPATCH_BACKEND_KQUEUE)
  struct sigaction current {};
  sigaction(signal, nullptr, &current);
  return current.sa_handler == SIG_IGN;
#else
  return blocked(signal);
#endif
}

// Back as it was before the watch (neither blocked nor ignored, here).
bool released(int signal) {
  return !blocked(signal) && !heldWhileWatched(signal);
}

void setBlocked(int signal, bool block) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, signal);
  pthread_sigmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, nullptr);
}

// The descriptor of the global dispatcher's Signal key, or -1.
int signalKey() {
  for (const auto& key : getIoHandler(getGlobalDispatcher()).fds) {
    if (key.fd != InvalidIdent && key.events.contains(Event::Signal)) return key.fd;
  }
  return -1;
}

} // namespace

TEST_CASE("addSignal: SIGUSR1 raised in the dispatcher's thread reaches the callback, and the "
          "mask is restored") {
  REQUIRE_FALSE(blocked(SIGUSR1));
  int calls = 0;
  AsyncFD key{-1};
  addSignal(SIGUSR1, [&](AsyncFD fd) {
    key = fd;
    ++calls;
    return true;
  });
  // Held while watched: the signal waits for the selector instead of killing the process.
  REQUIRE(heldWhileWatched(SIGUSR1));
  CHECK(activeDescriptors() == 1);
  CHECK(hasPendingOperations());
  const int fd = signalKey();
  REQUIRE(raise(SIGUSR1) == 0);
  pollUntil([&] { return calls > 0; });
  CHECK(calls == 1);
  CHECK(key == AsyncFD(fd));
  CHECK(released(SIGUSR1));
  CHECK_FALSE(isOpen(fd));
  CHECK_FALSE(hasPendingOperations());
  checkDispatcherEmpty();
}

namespace {

int signalCalls = 0;

// A plain function as the callback: Callback takes any callable, as std::function does.
bool countSignal(AsyncFD) {
  ++signalCalls;
  return true;
}

} // namespace

TEST_CASE("addSignal: takes a function's name as the callback") {
  signalCalls = 0;
  addSignal(SIGUSR1, countSignal);
  REQUIRE(heldWhileWatched(SIGUSR1));
  REQUIRE(raise(SIGUSR1) == 0);
  pollUntil([] { return signalCalls > 0; });
  CHECK(signalCalls == 1);
  CHECK(released(SIGUSR1));
  bool (*none)(AsyncFD) = nullptr;
  CHECK(valueErrorOf([&] { addSignal(SIGUSR1, none); }) == "addSignal: the callback is empty");
  CHECK(released(SIGUSR1));
  checkDispatcherEmpty();
}

TEST_CASE("addSignal: a callback returning false keeps the handler for the next signal") {
  int calls = 0;
  addSignal(SIGUSR1, [&](AsyncFD) { return ++calls == 2; });
  REQUIRE(heldWhileWatched(SIGUSR1));
  REQUIRE(pthread_kill(pthread_self(), SIGUSR1) == 0);
  pollUntil([&] { return calls == 1; });
  CHECK(calls == 1);
  CHECK(heldWhileWatched(SIGUSR1));
  CHECK(activeDescriptors() == 1);
  REQUIRE(pthread_kill(pthread_self(), SIGUSR1) == 0);
  pollUntil([&] { return calls == 2; });
  CHECK(calls == 2);
  CHECK(released(SIGUSR1));
  checkDispatcherEmpty();
}

TEST_CASE("addSignal: two signals before a pass make one call (standard signals coalesce)") {
  int calls = 0;
  addSignal(SIGUSR1, [&](AsyncFD) {
    ++calls;
    return false;
  });
  REQUIRE(heldWhileWatched(SIGUSR1));
  REQUIRE(raise(SIGUSR1) == 0);
  REQUIRE(raise(SIGUSR1) == 0);
  pollUntil([&] { return calls > 0; });
  poll(0);
  CHECK(calls == 1);
  // Removed by descriptor: the handler is called once more, as addRead's are.
  unregister(AsyncFD(signalKey()));
  CHECK(released(SIGUSR1));
  checkDispatcherEmpty();
}

TEST_CASE("addSignal: a signal ignored with SIG_IGN still reaches the callback") {
  struct sigaction ignore {};
  struct sigaction saved {};
  ignore.sa_handler = SIG_IGN;
  REQUIRE(sigaction(SIGUSR2, &ignore, &saved) == 0);
  int calls = 0;
  addSignal(SIGUSR2, [&](AsyncFD) { return ++calls > 0; });
  REQUIRE(raise(SIGUSR2) == 0);
  pollUntil([&] { return calls > 0; });
  CHECK(calls == 1);
  CHECK_FALSE(blocked(SIGUSR2));
  sigaction(SIGUSR2, &saved, nullptr);
  checkDispatcherEmpty();
}

TEST_CASE("addSignal: a signal that was blocked before stays blocked after removal") {
  setBlocked(SIGUSR2, true);
  int calls = 0;
  addSignal(SIGUSR2, [&](AsyncFD) { return ++calls > 0; });
  REQUIRE(raise(SIGUSR2) == 0);
  pollUntil([&] { return calls > 0; });
  CHECK(calls == 1);
  CHECK(blocked(SIGUSR2));
  setBlocked(SIGUSR2, false);
  checkDispatcherEmpty();
}

TEST_CASE("addSignal: the dump shows the key with its signal") {
  addSignal(SIGUSR1, [](AsyncFD) { return true; });
  std::ostringstream dump;
  dumpDispatcher(dump);
  CHECK(dump.str().find("events: {Signal}, param: " + std::to_string(SIGUSR1)) !=
        std::string::npos);
  REQUIRE(raise(SIGUSR1) == 0);
  pollUntil([] { return !hasPendingOperations(); });
  checkDispatcherEmpty();
}

TEST_CASE("addSignal: a number that is not a catchable signal throws ValueError naming addSignal") {
  for (const int signal : {0, -1, NSIG, 1000, int(SIGKILL), int(SIGSTOP), 32}) {
    try {
      addSignal(signal, [](AsyncFD) { return true; });
      FAIL_CHECK("addSignal(" << signal << ") was accepted");
    } catch (const ValueError& e) {
      const std::string message = e.what();
      CHECK_MESSAGE(message.rfind("addSignal(signal " + std::to_string(signal) + "): ", 0) == 0,
                    message);
    }
  }
  CHECK_FALSE(hasPendingOperations());
  checkDispatcherEmpty();
}

TEST_CASE("addSignal: watching one signal twice in a thread throws ValueError") {
  int calls = 0;
  addSignal(SIGUSR1, [&](AsyncFD) { return ++calls > 0; });
  CHECK_THROWS_WITH_AS(
      addSignal(SIGUSR1, [](AsyncFD) { return true; }),
      ("addSignal(signal " + std::to_string(SIGUSR1) + "): this thread already watches that signal")
          .c_str(),
      ValueError);
  CHECK(activeDescriptors() == 1);
  CHECK(heldWhileWatched(SIGUSR1)); // the refused call left the first handler's alone
  REQUIRE(raise(SIGUSR1) == 0);
  pollUntil([&] { return calls > 0; });
  CHECK(calls == 1);
  CHECK(released(SIGUSR1));
  checkDispatcherEmpty();
}

TEST_CASE("addSignal: a dispatcher destroyed with a handler closes it and restores the mask") {
  const PDispatcher global = getGlobalDispatcher();
  int fd = -1;
  {
    PDispatcher other = newDispatcher();
    setGlobalDispatcher(other);
    addSignal(SIGUSR2, [](AsyncFD) { return false; });
    fd = signalKey();
    CHECK(heldWhileWatched(SIGUSR2));
    setGlobalDispatcher(global);
  }
  REQUIRE(fd >= 0);
  CHECK_FALSE(isOpen(fd));
  CHECK(released(SIGUSR2));
  checkDispatcherEmpty();
}
#endif
