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
// Not yet on Windows (issue 5): addRead, addWrite, addTimer, AsyncEvent, addProcess and addSignal
// throw OSError(ERROR_CALL_NOT_IMPLEMENTED) naming themselves. The socket operations are in
// net.cpp (AcceptEx, ConnectEx, WSARecv, WSASend, WSARecvFrom, WSASendTo).
#pragma once

#ifndef NOMINMAX
#define NOMINMAX
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <windows.h>

#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <vector>

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

namespace detail {
struct WaitRegistration;
} // namespace detail

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
  // Not in Nim's drawing: overlapped operations started and not yet dequeued, abandoned ones
  // included (their OVERLAPPED still belongs to the port).
  int pendingOperations = 0;
  // Not in Nim's drawing: how many of those were abandoned (failed by closeSocket, unregister or
  // cancel) and are only waiting for their completion to be dequeued: they count as pending for
  // neither hasPendingOperations nor activeDescriptors.
  int abandonedOperations = 0;

  // Not in Nim's drawing: one socket operation in flight, as closeSocket, unregister and cancel
  // find it: its OVERLAPPED (to cancel), its future (to fail) and its name (for the error).
  struct InFlight {
    CustomOverlapped* ov;
    FutureBase fut;
    const char* op;
  };
  // The socket operations in flight on each descriptor (no entry for a descriptor with none): what
  // activeDescriptors counts, per descriptor as on POSIX (Nim counts every registered handle).
  std::unordered_map<AsyncFD, std::vector<InFlight>> operations;

  // Not in Nim's drawing: the timers, events and processes a thread-pool wait watches for this
  // dispatcher (addTimer, addEvent, addProcess; events.cpp), by handle, each with its kind. Each
  // counts in hasPendingOperations and activeDescriptors while it is armed.
  struct WaitKey {
    EventSet events;
    std::shared_ptr<detail::WaitRegistration> reg;
  };
  std::unordered_map<AsyncFD, WaitKey> waits;
};

namespace detail {
// The OVERLAPPED whose address marks a packet a wait registration posted (events.cpp): its
// completion key is the handle waited on, its byte count the registration's serial number.
extern OVERLAPPED waitPacket;
// Phase 3 for such a packet: runs the registration's callback on the dispatcher's thread.
void processWait(Dispatcher& p, AsyncFD fd, DWORD serial);
// unregister(fd) for a timer, an event or a process: stops the wait; false if fd is none.
bool unregisterWait(Dispatcher& p, AsyncFD fd);
} // namespace detail

// Nim's getIoHandler: the dispatcher's completion port.
HANDLE getIoHandler(const PDispatcher& disp);

} // namespace asyncdispatch
