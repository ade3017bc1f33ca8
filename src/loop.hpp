// What the portable core shares with the families (platform/posix/, platform/windows/): the phases
// of a pass that do not depend on the kernel, and the descriptor-naming helper for error messages.
#pragma once

#include <iosfwd>
#include <string>

#include "../include/asyncdispatch/backend.hpp"

namespace asyncdispatch::detail {

// Takes the operation that serves `fut` out of descriptor fd (the family's half of cancelling an
// I/O operation). Returns false if none was found.
bool cancelWaiting(std::intptr_t fd, const FutureStateBase& fut);

// The entry points that take a Callback (addRead, addTimer, addEvent ...) refuse an empty one (a
// null function pointer) at the call, as std::function's users would expect an error there
// rather than a crash when it is due.
inline void checkCallback(const char* op, const Callback& cb) {
  if (!cb) throw ValueError(std::string(op) + ": the callback is empty");
}

// This thread's dispatcher, made on first use; what getGlobalDispatcher() points to.
Dispatcher& currentDispatcher();

// Phase 1 of a pass: how long selectInto may wait. 0 if callbacks are queued or a timer is due;
// otherwise `timeout` (-1: forever) shortened to the nearest timer, rounded up to whole ms so a
// timer is never woken early.
int adjustTimeout(const DispatcherBase& p, int timeout);
// Phase 4: complete every timer whose finishAt has passed, earliest first.
void processTimers(DispatcherBase& p);
// Phase 5: run the callSoon queue (bounded: see dispatcher.cpp).
void processPendingCallbacks(DispatcherBase& p);

// Marks the thread as inside a pass of poll for its lifetime; a second one made meanwhile (poll
// or waitFor called from a callback that poll is running) throws ValueError.
extern constinit thread_local bool insidePass;
[[noreturn]] void throwNestedPoll();
class PassGuard {
public:
  PassGuard() {
    if (insidePass) throwNestedPoll();
    insidePass = true;
  }
  ~PassGuard() { insidePass = false; }
  PassGuard(const PassGuard&) = delete;
  PassGuard& operator=(const PassGuard&) = delete;
};

// The part of dumpDispatcher every backend shares: the timers (in firing order), the callSoon
// queue and the suspended coroutines, in the drawing's notation.
void dumpTimersAndCallbacks(std::ostream& os, const DispatcherBase& p);

// An operation may complete synchronously (without waiting for readiness) only while this returns
// true: each callback phase allows kSynchronousTurnsPerPass of them, so a coroutine whose every
// operation completes at once still yields to the loop (the fairness guard of optimistic I/O).
bool takeSynchronousTurn() noexcept;

// fork(), for the POSIX family's pthread_atfork handlers (platform/posix/family.cpp); Windows
// never calls them. prepareFork takes the library's locks, so that the child finds none held by
// a thread it does not have; both sides give them back. In the child, each thread's dispatcher is
// renewed at its next use (see renewAfterFork in dispatcher.cpp).
void prepareFork() noexcept;
void resumeInParent() noexcept;
void resumeInChild() noexcept;
// The recycler's lock (src/recycler.cpp), for prepareFork and the resume functions.
void lockRecycler() noexcept;
void unlockRecycler() noexcept;

// The OS's descriptor behind an AsyncFD.
inline SocketHandle handle(AsyncFD fd) noexcept {
  return static_cast<SocketHandle>(fd);
}

// "recv(fd 7)": how errors name the operation and the descriptor.
std::string where(const char* op, AsyncFD fd);

// While closeSocket or unregister fails the operations waiting on fd, each pending callback is
// called once more and this returns why ("closed", "unregistered"); nullptr otherwise.
const char* abandonReason(AsyncFD fd) noexcept;

// Fails what addRead and addWrite left waiting on fd, which has already left the dispatcher
// (closeSocket, unregister): each callback is called once while abandonReason(fd) says why.
// Returns how many asked to be called again (they cannot be). src/abandon.cpp.
int abandonCallbacks(AsyncFD fd, PData& data, const char* why);

} // namespace asyncdispatch::detail
