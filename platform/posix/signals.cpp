// The signal pieces; their invariants open signals.hpp.
#include "signals.hpp"

#include <pthread.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <mutex>
#include <thread>

#include "../../include/asyncdispatch/errors.hpp"

namespace asyncdispatch {

namespace {

// Whether this thread watches a signal, and whether it was blocked before (see 1 and 2).
struct SignalWatch {
  bool watched = false;
  bool blockedBefore = false;
  bool blocks = true; // watchSignal blocked it
};
thread_local std::array<SignalWatch, NSIG> signalWatches;

// Between the kernel's first real-time signal (32 on Linux) and SIGRTMIN: glibc keeps 32 and 33
// for its threads and starts SIGRTMIN above them (see 3). Without real-time signals (macOS)
// there is nothing to keep.
bool reservedByLibc(int signal) {
#if defined(SIGRTMIN)
  constexpr int kKernelRtMin = 32;
  return signal >= kKernelRtMin && signal < SIGRTMIN;
#else
  (void)signal;
  return false;
#endif
}

// The process-wide route of one signal to the SignalPipe that catches it (see 4 and 5). Only
// lock-free atomics may be touched by a handler.
struct Route {
  std::atomic<int> writeFd{-1};
  std::atomic<bool> pending{false};
  struct sigaction saved {}; // the owner's alone: written by catchSignal, read by release
};
static_assert(std::atomic<int>::is_always_lock_free && std::atomic<bool>::is_always_lock_free);
std::array<Route, NSIG> routes;

// Handlers between reading a route and writing its pipe (see 6).
std::atomic<int> handlersRunning{0};

extern "C" void onSignal(int signal) {
  const int savedErrno = errno;
  handlersRunning.fetch_add(1);
  Route& route = routes[signal];
  route.pending.store(true);
  if (const int fd = route.writeFd.load(); fd >= 0) {
    // EAGAIN: the pipe is full, so the selector is woken already and will see pending.
    const auto byte = static_cast<unsigned char>(signal);
    [[maybe_unused]] const ssize_t written = ::write(fd, &byte, 1);
  }
  handlersRunning.fetch_sub(1);
  errno = savedErrno;
}

// The dispositions set aside by ignoreWhileWatched, process-wide (see 8).
struct Ignored {
  int watchers = 0;
  struct sigaction saved {};
};
std::mutex ignoredLock;
std::array<Ignored, NSIG> ignoredSignals;

} // namespace

void checkSignal(int signal, const std::string& at) {
  if (signal < 1 || signal >= NSIG)
    throw ValueError(at + ": not a signal number (1 to " + std::to_string(NSIG - 1) + ")");
  if (signal == SIGKILL || signal == SIGSTOP)
    throw ValueError(at + ": SIGKILL and SIGSTOP cannot be caught");
  if (reservedByLibc(signal)) throw ValueError(at + ": reserved by the C library for its threads");
}

void watchSignal(int signal, const std::string& at, bool block) {
  SignalWatch& watch = signalWatches[signal];
  if (watch.watched) throw ValueError(at + ": this thread already watches that signal");
  if (!block) {
    watch = SignalWatch{true, false, false};
    return;
  }
  sigset_t set;
  sigset_t old;
  sigemptyset(&set);
  sigaddset(&set, signal);
  if (const int error = pthread_sigmask(SIG_BLOCK, &set, &old); error != 0)
    throw OSError(error, at + ": pthread_sigmask");
  watch = SignalWatch{true, sigismember(&old, signal) == 1, true};
}

void unwatchSignal(int signal) noexcept {
  SignalWatch& watch = signalWatches[signal];
  if (!watch.watched) return;
  if (watch.blocks && !watch.blockedBefore) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signal);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  }
  watch = SignalWatch{};
}

void ignoreWhileWatched(int signal) noexcept {
  if (signal == SIGCHLD) return;
  const std::lock_guard lock(ignoredLock);
  Ignored& entry = ignoredSignals[signal];
  if (entry.watchers++ > 0) return;
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  sigaction(signal, &ignore, &entry.saved); // fails only for a number checkSignal refuses
}

void restoreDisposition(int signal) noexcept {
  if (signal == SIGCHLD) return;
  const std::lock_guard lock(ignoredLock);
  Ignored& entry = ignoredSignals[signal];
  if (entry.watchers == 0) return; // put back in a forked child already (see 9)
  if (--entry.watchers == 0) sigaction(signal, &entry.saved, nullptr);
}

void prepareSignalsForFork() noexcept {
  ignoredLock.lock();
}

void resumeSignalsInParent() noexcept {
  ignoredLock.unlock();
}

// Runs in the child before fork() returns there, with one thread: only async-signal-safe calls.
void resumeSignalsInChild() noexcept {
  for (int signal = 1; signal < NSIG; ++signal) {
    Route& route = routes[signal];
    if (route.writeFd.exchange(-1) >= 0) sigaction(signal, &route.saved, nullptr);
    route.pending.store(false);
    Ignored& entry = ignoredSignals[signal];
    if (entry.watchers > 0) sigaction(signal, &entry.saved, nullptr);
    entry.watchers = 0;
  }
  handlersRunning.store(0); // a handler running in another thread at the fork never ends here
  ignoredLock.unlock();
}

SignalPipe::~SignalPipe() {
  for (int signal = 1; signal < NSIG && count > 0; ++signal) {
    if (sigismember(&caughtSet, signal) == 1) release(signal);
  }
}

void SignalPipe::catchSignal(int signal, const std::string& at) {
  if (count == 0) {
    openPipe(readEnd, writeEnd, at);
    sigemptyset(&caughtSet);
  }
  Route& route = routes[signal];
  int unrouted = -1;
  if (!route.writeFd.compare_exchange_strong(unrouted, writeEnd.get())) {
    if (count == 0) closePipe();
    throw ValueError(at + ": another thread's dispatcher already watches that signal");
  }
  route.pending.store(false);
  struct sigaction action {};
  action.sa_handler = onSignal;
  action.sa_flags = SA_RESTART;
  sigfillset(&action.sa_mask); // one handler at a time in this thread: it is short
  if (sigaction(signal, &action, &route.saved) != 0) {
    const int error = errno;
    route.writeFd.store(-1);
    if (count == 0) closePipe();
    throw OSError(error, at + ": sigaction");
  }
  sigaddset(&caughtSet, signal);
  ++count;
}

void SignalPipe::release(int signal) noexcept {
  if (sigismember(&caughtSet, signal) != 1) return;
  Route& route = routes[signal];
  // A route a fork took away (see 9) had its disposition put back then.
  if (route.writeFd.load() == writeEnd.get()) sigaction(signal, &route.saved, nullptr);
  route.writeFd.store(-1);
  route.pending.store(false);
  sigdelset(&caughtSet, signal);
  if (--count > 0) return;
  // No route names the pipe now; a handler that read one before is still writing (see 6).
  while (handlersRunning.load() != 0)
    std::this_thread::yield();
  closePipe();
}

void SignalPipe::closePipe() noexcept {
  readEnd.reset();
  writeEnd.reset();
}

void SignalPipe::drain() noexcept {
  drainPipe(readEnd.get());
}

bool SignalPipe::take(int signal) noexcept {
  return sigismember(&caughtSet, signal) == 1 && routes[signal].pending.exchange(false);
}

UnblockedWhileWaiting::UnblockedWhileWaiting(const SignalPipe& pipe) noexcept
    : active(pipe.isOpen()) {
  if (active) pthread_sigmask(SIG_UNBLOCK, &pipe.caught(), &saved);
}

UnblockedWhileWaiting::~UnblockedWhileWaiting() {
  if (active) pthread_sigmask(SIG_SETMASK, &saved, nullptr);
}

} // namespace asyncdispatch
