// The signal pieces every selector backend shares: which signals a thread watches (epoll, kqueue,
// event ports, poll), and, for a kernel with no signal filter (event ports, poll), how a signal
// is noticed at all: a process-wide handler that writes to a self-pipe.
//
// Invariants of the watches (watchSignal, unwatchSignal), per thread since the mask is:
//  1. A thread watches a signal at most once. Two watchers in one thread would race for each
//     delivery, so a second is refused with ValueError.
//  2. While a thread watches a signal it is blocked in that thread's mask (a handler-based
//     selector opens it only for the length of its wait, see UnblockedWhileWaiting), and
//     unwatchSignal puts back exactly the bit that was there before the first watch.
//  3. checkSignal refuses what no backend can watch: 0, numbers >= NSIG, SIGKILL and SIGSTOP
//     (never blocked nor caught) and the real-time signals the C library keeps for its threads
//     (glibc's 32 and 33, below SIGRTMIN).
//
// Invariants of SignalPipe, the self-pipe trick (D. J. Bernstein; libuv's signal.c, Nim's
// ioselectors_kqueue for kernels without EVFILT_SIGNAL):
//  4. A signal is caught for at most one SignalPipe in the process: the handler finds the pipe
//     through a process-wide route per signal, so a second catcher, in any thread, is refused.
//  5. The handler calls only async-signal-safe functions (atomics and write(2)) and keeps errno.
//     It marks the signal pending before it writes its byte, and drain empties the pipe before
//     it takes the marks: a signal is coalesced with others, never lost, and a full pipe loses
//     only a redundant byte.
//  6. The pipe is closed only once no route names it and no handler is between reading its route
//     and writing to it, so a handler never writes to a closed descriptor or to the next owner
//     of its number.
//  7. release restores the disposition the signal had before catch (SIG_IGN, SIG_DFL or the
//     program's handler).
//
// For a kernel whose signal filter records a signal even under SIG_IGN (kqueue's EVFILT_SIGNAL):
//  8. While any dispatcher in the process watches a signal its disposition is SIG_IGN, so that
//     its default action cannot end the process; the last watcher puts back what was there.
//     SIGCHLD is left alone: ignoring it would make the kernel reap every child.
//
// Across fork (resumeSignalsInChild, called by the family's pthread_atfork handler):
//  9. A forked child shares its parent's pipes, so in the child no route is left: a signal sent
//     to the child never reaches the parent's dispatcher. Each signal caught or ignored for a
//     watcher gets back, in the child, the disposition it had before; release and
//     restoreDisposition then leave alone the signals they no longer hold.
#pragma once

#include <signal.h>

#include <string>

#include "descriptors.hpp"

namespace asyncdispatch {

// Throws ValueError, prefixed with at, unless signal can be watched (see 3).
void checkSignal(int signal, const std::string& at);

// Blocks signal in this thread and records that the thread watches it (see 1 and 2). A kernel
// whose signal filter needs no mask (kqueue's EVFILT_SIGNAL) passes block = false: the record only.
void watchSignal(int signal, const std::string& at, bool block = true);

// Puts signal's mask bit back as it was before watchSignal; nothing if the thread does not
// watch it.
void unwatchSignal(int signal) noexcept;

// See 8: counted per signal, process-wide; call restoreDisposition once per ignoreWhileWatched.
void ignoreWhileWatched(int signal) noexcept;
void restoreDisposition(int signal) noexcept;

// A self-pipe that the signals it catches write to; the selector polls readFd().
class SignalPipe {
public:
  SignalPipe() = default;
  ~SignalPipe();
  SignalPipe(const SignalPipe&) = delete;
  SignalPipe& operator=(const SignalPipe&) = delete;

  // Routes signal to this pipe and installs the handler, opening the pipe for the first one.
  // The caller has called watchSignal, so the signal waits in the mask until the selector's wait.
  void catchSignal(int signal, const std::string& at);
  // Undoes catchSignal (see 7); closes the pipe after the last signal (see 6).
  void release(int signal) noexcept;
  // Empties the pipe once it polls readable; then take says, per caught signal, whether it
  // arrived since the last take (see 5).
  void drain() noexcept;
  bool take(int signal) noexcept;

  bool isOpen() const noexcept { return readEnd.get() >= 0; }
  int readFd() const noexcept { return readEnd.get(); }
  const sigset_t& caught() const noexcept { return caughtSet; }

private:
  void closePipe() noexcept;

  UniqueFd readEnd;
  UniqueFd writeEnd;
  sigset_t caughtSet{};
  int count = 0;
};

// fork() (see 9): the dispositions' lock is held across it, and given back on both sides.
void prepareSignalsForFork() noexcept;
void resumeSignalsInParent() noexcept;
void resumeSignalsInChild() noexcept;

// Opens the caught signals in this thread for the length of a wait and blocks them again (see
// 2): a signal pending from before is delivered at once, its handler writes the pipe, and the
// wait returns, so unblocking just before poll(2) loses nothing.
class UnblockedWhileWaiting {
public:
  explicit UnblockedWhileWaiting(const SignalPipe& pipe) noexcept;
  ~UnblockedWhileWaiting();
  UnblockedWhileWaiting(const UnblockedWhileWaiting&) = delete;
  UnblockedWhileWaiting& operator=(const UnblockedWhileWaiting&) = delete;

private:
  bool active;
  sigset_t saved{};
};

} // namespace asyncdispatch
