// The IOCP dispatcher (Windows): Nim's Windows PDispatcher, a proactor. Operations are started
// with overlapped I/O and their completions are dequeued from one completion port, `ioPort`;
// timers and callbacks are the portable core's, as on every backend.
//
// What is hard about IOCP, and where this backend deals with it:
//  1. The kernel writes into an OVERLAPPED (and its buffer) until the completion is dequeued,
//     also after closesocket or CancelIoEx. So a CustomOverlapped in flight belongs to the port:
//     the operation releases it when it starts and poll takes it back when it is dequeued
//     (processCompletion in poll.cpp), never earlier.
//  2. GetQueuedCompletionStatusEx returns many completions per call (Nim's runOnce takes one with
//     GetQueuedCompletionStatus), but it reports each operation's status as the NTSTATUS left in
//     OVERLAPPED.Internal, not as a Win32 error: GetOverlappedResult translates it (poll.cpp).
//  3. A handle cannot leave the completion port it was associated with (register_): unregister
//     only forgets it, and a completion that still arrives for it is dispatched as usual.
//  4. Its timeout is in whole milliseconds and a wait may end up to one clock tick early; the
//     portable loop rounds up and processTimers reads the clock, so no timer fires early.
//  5. windows.h defines min and max as macros, which breaks std::min in the core and in user code,
//     and its old winsock.h clashes with winsock2.h: both are switched off before it is included.
//
// Not yet on Windows (issue 5): the socket operations, closeSocket, addRead, addWrite, addTimer,
// AsyncEvent, addProcess and addSignal throw OSError(ERROR_CALL_NOT_IMPLEMENTED) naming
// themselves; nothing starts an overlapped operation yet.
#pragma once

#ifndef NOMINMAX
#define NOMINMAX
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <windows.h>

#include <unordered_set>

#include "../../include/asyncdispatch/dispatcher.hpp"

namespace asyncdispatch {

// Nim's CompletionData.cb: what runs when an overlapped operation completes, with the bytes it
// transferred and its Win32 error (0 for success).
using CompletionCallback =
    detail::UniqueFunction<void(AsyncFD fd, DWORD bytesTransferred, DWORD errcode)>;

// Nim's CompletionData: the descriptor an overlapped operation runs on and its completion.
struct CompletionData {
  AsyncFD fd{-1};
  CompletionCallback cb;
};

// Nim's CustomObj (`object of OVERLAPPED`): the OVERLAPPED a call takes, followed by its
// CompletionData, so the OVERLAPPED* that GetQueuedCompletionStatusEx returns leads back to the
// callback. Owned by the completion port while in flight (see 1 above).
struct CustomOverlapped : OVERLAPPED {
  CompletionData data;
};

struct Dispatcher : DispatcherBase {
  // Nim's newDispatcher: opens the completion port. Throws OSError if Windows refuses.
  Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;
  // Destroys the coroutines still suspended first, while the port, timers and callbacks they may
  // touch from their destructors are all still there; then closes the port.
  ~Dispatcher();

  // Nim's ioPort: the completion port every registered handle is associated with.
  HANDLE ioPort = nullptr;
  // Nim's handles: the registered descriptors.
  std::unordered_set<AsyncFD> handles;
  // Not in Nim's drawing: overlapped operations started and not yet dequeued. What
  // hasPendingOperations and activeDescriptors count (Nim counts every registered handle).
  int pendingOperations = 0;
};

// Nim's getIoHandler: the dispatcher's completion port.
HANDLE getIoHandler(const PDispatcher& disp);

} // namespace asyncdispatch
