// The IOCP dispatcher (Windows): Nim's Windows PDispatcher, a proactor. Operations are started
// with overlapped I/O and their completions are dequeued from one completion port, `ioPort`;
// timers and callbacks are the portable core's, as on every backend.
//
// What is hard about IOCP, and where this backend deals with it:
//  1. The kernel writes into an OVERLAPPED (and its buffer) until the completion is dequeued,
//     also after closesocket or CancelIoEx. So a CustomOverlapped in flight belongs to the port:
//     the operation releases it when it starts and poll takes it back when it is dequeued
//     (processEvent in family.cpp), never earlier; a dispatcher destroyed meanwhile cancels
//     the calls and waits for their completions before it frees them (~Dispatcher).
//  2. GetQueuedCompletionStatusEx returns many completions per call (Nim's runOnce takes one with
//     GetQueuedCompletionStatus), but it reports each operation's status as the NTSTATUS left in
//     OVERLAPPED.Internal, not as a Win32 error: GetOverlappedResult translates it (family.cpp).
//  3. A handle cannot leave the completion port it was associated with (register_): unregister
//     only forgets it, a completion that still arrives for it is dispatched as usual, and
//     registering it again finds it associated already.
//  4. Its timeout is in whole milliseconds and a wait may end up to one clock tick early; the
//     portable loop rounds up and processTimers reads the clock, so no timer fires early.
//  5. windows.h defines min and max as macros, which breaks std::min in the core and in user code,
//     and its old winsock.h clashes with winsock2.h: both are switched off before it is included.
//  6. Readiness (addRead, addWrite) is not what a completion port reports: WSAEventSelect sets an
//     event, a thread-pool wait turns the event into a packet, and poll asks select() what the
//     socket is ready for (family.cpp, processReadiness).
//
// The socket operations are in net.cpp (AcceptEx, ConnectEx, WSARecv, WSASend, WSARecvFrom,
// WSASendTo); timers, events and processes in events.cpp; addSignal throws: Windows has no POSIX
// signals.
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
#include <ostream>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../../include/asyncdispatch/dispatcher.hpp"
#include "../../include/asyncdispatch/selector.hpp"

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

struct Dispatcher;

// Nim's CustomRef (a `ref CustomObj`), made by newCustom: the CustomOverlapped of an overlapped
// call the application makes itself (ReadFile on a pipe, DeviceIoControl ...) on a handle given to
// register_. Set data, pass get() to the call, and once the call has started (it returned TRUE,
// or FALSE with ERROR_IO_PENDING) call release(): from then on the port owns it, and poll runs
// data.cb with the byte count and the Win32 error when its completion is dequeued, then frees it
// (Nim's runOnce and its GC_unref). A call that failed at once brings no completion: then let the
// CustomRef go, which frees it (where Nim's caller must GC_unref by hand).
class CustomRef {
public:
  CustomRef(CustomRef&& other) noexcept : p_(other.p_), ov_(std::exchange(other.ov_, nullptr)) {}
  CustomRef& operator=(CustomRef&&) = delete;
  ~CustomRef() { delete ov_; }

  CustomOverlapped* operator->() const noexcept { return ov_; }
  CustomOverlapped& operator*() const noexcept { return *ov_; }
  OVERLAPPED* get() const noexcept { return ov_; }
  // The call has started: the completion port owns the OVERLAPPED until its packet is dequeued.
  OVERLAPPED* release();

private:
  friend CustomRef newCustom();
  CustomRef(Dispatcher& p, CustomOverlapped* ov) noexcept : p_(&p), ov_(ov) {}
  Dispatcher* p_;
  CustomOverlapped* ov_;
};

// Nim's newCustom: a CustomRef for this thread's dispatcher, its callback empty.
CustomRef newCustom();

namespace detail {
struct WaitRegistration;
} // namespace detail

struct Dispatcher : DispatcherBase {
  // Nim's newDispatcher: opens the completion port. Throws OSError if Windows refuses.
  Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;
  // Destroys the coroutines still suspended first, while the port, timers and callbacks they may
  // touch from their destructors are all still there; then stops the waits, cancels the
  // overlapped calls still in flight and takes their completions back from the port (so that no
  // kernel write lands in freed memory), and closes the port.
  ~Dispatcher();

  // Nim's ioPort: the completion port every registered handle is associated with.
  HANDLE ioPort = nullptr;
  // Nim's handles: the registered descriptors.
  std::unordered_set<AsyncFD> handles;
  // Not in Nim's drawing: the handles associated with ioPort and not closed by closeSocket, those
  // unregistered included: an association cannot be undone (see 3 above), so register_ knows that
  // Windows' refusal to make it again is no error. A handle closed without closeSocket stays
  // listed until its number is registered again.
  std::unordered_set<AsyncFD> associated;
  // Not in Nim's drawing: overlapped operations started and not yet dequeued, abandoned ones
  // included (their OVERLAPPED still belongs to the port): each will bring exactly one packet,
  // which is how the destructor knows when it has taken them all back.
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
  // Not in Nim's drawing: the application's own calls in flight (CustomRef::release), so that the
  // destructor can cancel them too.
  std::unordered_set<CustomOverlapped*> customOperations;

  // Not in Nim's drawing: what a thread-pool wait watches for this dispatcher, by handle, as the
  // POSIX selector keys its fds: a timer, an event or a process (addTimer, addEvent, addProcess;
  // events.cpp) with its one callback in data.readCBs, as on POSIX; or a socket that addRead and
  // addWrite watch (family.cpp), with their callbacks in data.readCBs and data.writeCBs. A key is
  // here only while it is armed, and counts once in hasPendingOperations and activeDescriptors.
  struct WaitKey {
    EventSet events; // {Timer}, {User}, {Process} (+ Oneshot), or Read and Write for a socket
    PData data;
    std::shared_ptr<detail::WaitRegistration> reg;
    int param = 0; // Nim's SelectorKey.param: the pid of a Process key
  };
  std::unordered_map<AsyncFD, WaitKey> waits;
};

namespace detail {
// The OVERLAPPED whose address marks a packet a wait registration posted (events.cpp): its
// completion key is the handle waited on, its byte count the registration's serial number.
extern OVERLAPPED waitPacket;
// Phase 3 for such a packet: runs the key's callback (or, for a socket, processReadiness) on the
// dispatcher's thread.
void processWait(Dispatcher& p, AsyncFD fd, DWORD serial);
// unregister(fd) for a timer, an event or a process: stops the wait; false if fd is none.
bool unregisterWait(Dispatcher& p, AsyncFD fd);
// A wait for the socket fd (addRead, addWrite) on an event of its own, for WSAEventSelect to set:
// it posts a packet when the event is set. Throws OSError if Windows refuses.
std::shared_ptr<WaitRegistration> watchSocket(const char* op, Dispatcher& p, AsyncFD fd);
// The event a socket's registration waits on, and posting its packet from the dispatcher's thread
// (at most one is in the port at a time).
HANDLE eventOf(const WaitRegistration& reg);
void postNow(WaitRegistration& reg);
// Phase 3 for a socket's packet (family.cpp): runs the callbacks of what the socket is ready for.
void processReadiness(Dispatcher& p, AsyncFD fd);
// A key of `waits` as phase 3 sees it (src/dispatch.hpp): the key of registration `reg` while it
// is still that one (a callback may unregister it, or let it go and add a new one).
struct WaitView {
  Dispatcher& p;
  AsyncFD fd;
  const WaitRegistration* reg;
  PData* data() const;
  void rearm() const;
  bool finished() const;
  void remove() const;
};
// Which kind of key events describe: Timer, Process or User for the library's objects, Read for a
// socket's.
Event kindOf(EventSet events);
// What the completion family's wait reports (src/family.hpp): dequeued completions.
using FamilyReport = OVERLAPPED_ENTRY;

} // namespace detail

// Nim's getIoHandler: the dispatcher's completion port.
HANDLE getIoHandler(const PDispatcher& disp);

} // namespace asyncdispatch
