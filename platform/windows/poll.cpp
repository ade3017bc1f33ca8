// The loop of the IOCP backend: the descriptor registry, Nim's runOnce (poll) and dumpDispatcher,
// in the order of platform/posix/poll.cpp so the two diff side by side. Completions replace
// readiness: phase 2 dequeues them and phase 3 runs each one's CompletionData.cb.
#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdio>
#include <exception>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "../../src/loop.hpp"

namespace asyncdispatch {

namespace {

using detail::handle;

// The calls that are not written yet (issue 5).
[[noreturn]] void notYet(const char* op, AsyncFD fd) {
  throw OSError(ERROR_CALL_NOT_IMPLEMENTED, detail::where(op, fd), "not yet on Windows");
}

// Fails each socket operation in flight on fd once (closeSocket, unregister), with
// ERROR_OPERATION_ABORTED and a message naming the operation and why. Their OVERLAPPEDs stay with
// the port: the aborted completions, once dequeued, find themselves unlisted and do nothing
// (claim in net.cpp). `cancel` stops the calls in the kernel (closesocket already does).
void abandon(Dispatcher& p, AsyncFD fd, const char* why, bool cancel) {
  const auto it = p.operations.find(fd);
  if (it == p.operations.end()) return;
  const std::vector<Dispatcher::InFlight> ops = std::move(it->second);
  p.operations.erase(it);
  p.abandonedOperations += static_cast<int>(ops.size());
  for (const Dispatcher::InFlight& op : ops) {
    if (cancel) CancelIoEx(reinterpret_cast<HANDLE>(handle(fd)), op.ov);
    if (!op.fut.finished())
      op.fut.fail(OSError(ERROR_OPERATION_ABORTED, detail::where(op.op, fd),
                          std::string("socket ") + why + " while the operation was pending"));
  }
}

// Phase 3 for one dequeued completion (Nim's runOnce body): the CustomOverlapped goes back from
// the port to us (see dispatcher.hpp, 1) and is freed after its callback, whatever it does.
// A packet without an OVERLAPPED was posted by hand and carries nothing to run.
void processCompletion(Dispatcher& p, const OVERLAPPED_ENTRY& entry) {
  if (entry.lpOverlapped == &detail::waitPacket) {
    detail::processWait(p, AsyncFD(entry.lpCompletionKey), entry.dwNumberOfBytesTransferred);
    return;
  }
  if (entry.lpOverlapped == nullptr) return;
  std::unique_ptr<CustomOverlapped> ov(static_cast<CustomOverlapped*>(entry.lpOverlapped));
  --p.pendingOperations;
  DWORD errcode = 0;
  // Internal holds the operation's NTSTATUS; GetOverlappedResult turns it into the Win32 error
  // that GetQueuedCompletionStatus would have given (see dispatcher.hpp, 2).
  if (ov->Internal != 0) {
    DWORD bytes = 0;
    if (GetOverlappedResult(reinterpret_cast<HANDLE>(handle(ov->data.fd)), ov.get(), &bytes,
                            FALSE) == 0)
      errcode = GetLastError();
  }
  if (ov->data.cb) ov->data.cb(ov->data.fd, entry.dwNumberOfBytesTransferred, errcode);
}

} // namespace

namespace detail {

// A proactor cancels in the kernel (CONTRIBUTING.md, cancellation): CancelIoEx on the operation's
// OVERLAPPED, and cancel() fails the future at once. The OVERLAPPED and its buffer stay with the
// port until the aborted completion is dequeued, which then does nothing (claim in net.cpp). A
// call that had already completed cannot be cancelled: what it did (bytes read, a connection
// accepted and then closed with its state) is lost with the future.
bool cancelWaiting(std::intptr_t fd, const FutureStateBase& fut) {
  Dispatcher& p = currentDispatcher();
  const auto it = p.operations.find(AsyncFD(fd));
  if (it == p.operations.end()) return false;
  std::vector<Dispatcher::InFlight>& list = it->second;
  const auto op = std::find_if(list.begin(), list.end(), [&](const Dispatcher::InFlight& o) {
    return &stateOf(o.fut) == &fut;
  });
  if (op == list.end()) return false;
  CancelIoEx(reinterpret_cast<HANDLE>(static_cast<SocketHandle>(fd)), op->ov);
  list.erase(op);
  if (list.empty()) p.operations.erase(it);
  ++p.abandonedOperations;
  return true;
}

} // namespace detail

Dispatcher::Dispatcher() : ioPort(CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, 1)) {
  if (ioPort == nullptr) throw OSError(static_cast<int>(GetLastError()), "newDispatcher");
}

Dispatcher::~Dispatcher() {
  suspended.destroyAll();
  waits.clear(); // stops every thread-pool wait before the port they post to is closed
  CloseHandle(ioPort);
}

HANDLE getIoHandler(const PDispatcher& disp) {
  if (!disp) throw ValueError("getIoHandler: the dispatcher is nil");
  return disp->ioPort;
}

// Nim's register on Windows: associates fd with the completion port, keyed by fd itself, so
// every overlapped operation on it completes there.
void register_(AsyncFD fd) {
  Dispatcher& p = detail::currentDispatcher();
  if (p.handles.contains(fd))
    throw ValueError(detail::where("register_", fd) + ": descriptor already registered");
  if (CreateIoCompletionPort(reinterpret_cast<HANDLE>(handle(fd)), p.ioPort,
                             static_cast<ULONG_PTR>(handle(fd)), 1) == nullptr)
    throw OSError(static_cast<int>(GetLastError()), detail::where("register_", fd));
  p.handles.insert(fd);
}

// Nim's unregister on Windows: forgets fd (the port association stays; see dispatcher.hpp, 3).
// Beyond Nim, pending operations are cancelled and fail with "unregistered".
void unregister(AsyncFD fd) {
  Dispatcher& p = detail::currentDispatcher();
  if (detail::unregisterWait(p, fd)) return; // a timer's, an event's or a process's handle
  if (p.handles.erase(fd) == 0)
    throw ValueError(detail::where("unregister", fd) + ": descriptor not registered");
  abandon(p, fd, "unregistered", true);
}

bool contains(const PDispatcher& disp, AsyncFD fd) {
  return disp && disp->handles.contains(fd);
}

// Nim's closeSocket on Windows: closesocket, which aborts every overlapped call on the socket;
// beyond Nim, each pending operation fails once with ERROR_OPERATION_ABORTED naming it, as on
// POSIX (where the code is EBADF).
void closeSocket(AsyncFD fd) {
  Dispatcher& p = detail::currentDispatcher();
  if (!p.handles.contains(fd))
    throw ValueError(detail::where("closeSocket", fd) + ": File descriptor not registered.");
  p.handles.erase(fd);
  const int closeError = closesocket(handle(fd)) != 0 ? WSAGetLastError() : 0;
  abandon(p, fd, "closed", false);
  if (closeError != 0) throw OSError(closeError, detail::where("closeSocket", fd));
}

// Nim's addRead/addWrite on Windows wait with WSAEventSelect and RegisterWaitForSingleObject.
void addRead(AsyncFD fd, Callback) {
  notYet("addRead", fd);
}

void addWrite(AsyncFD fd, Callback) {
  notYet("addWrite", fd);
}

// Abandoned operations whose completion is still to be dequeued are not pending: their futures
// have failed, and the next pass that waits collects them.
bool hasPendingOperations() {
  const Dispatcher& p = detail::currentDispatcher();
  return p.pendingOperations > p.abandonedOperations || !p.waits.empty() ||
         p.timers.size() > p.cancelledTimers || !p.callbacks.empty();
}

// Each descriptor with a socket operation in flight counts once (DESIGN §5), and whatever else is
// in flight on the port once each.
int activeDescriptors() {
  const Dispatcher& p = detail::currentDispatcher();
  int socketOperations = 0;
  for (const auto& [fd, ops] : p.operations)
    socketOperations += static_cast<int>(ops.size());
  return static_cast<int>(p.operations.size()) + p.pendingOperations - p.abandonedOperations -
         socketOperations + static_cast<int>(p.waits.size());
}

// Nim's maxDescriptors on Windows: 16_700_000, the most handles a Windows process can hold.
int maxDescriptors() {
  return 16'700'000;
}

// Nim's setInheritable on Windows: the handle's HANDLE_FLAG_INHERIT.
bool setInheritable(AsyncFD fd, bool inheritable) {
  return SetHandleInformation(reinterpret_cast<HANDLE>(handle(fd)), HANDLE_FLAG_INHERIT,
                              inheritable ? HANDLE_FLAG_INHERIT : 0) != 0;
}

// Nim's poll, that is one runOnce: the five phases of a pass, top to bottom.
void poll(int timeout) {
  // A callback that polls (waitFor inside a callback) would run this pass's completions and
  // callbacks from the middle of their own dispatch; Nim lets it and breaks in subtle ways.
  const detail::PassGuard pass;
  Dispatcher& p = detail::currentDispatcher();
  if (!hasPendingOperations()) throw ValueError("No handles or timers registered in dispatcher.");

  // 1. How long the kernel may block: not at all when callbacks are queued or a timer is due.
  const int wait = detail::adjustTimeout(p, timeout);

  // 2. Wait for completions, up to 64 per call (Nim's events[64]; Nim takes one per pass). With
  // nothing in flight and no time to wait there is nothing to ask the kernel; with nothing in
  // flight but a timer ahead, the wait is the sleep until it.
  thread_local std::array<OVERLAPPED_ENTRY, 64> entries;
  ULONG ready = 0;
  if (wait != 0 || p.pendingOperations != 0 || !p.waits.empty()) {
    const DWORD ms = wait < 0 ? INFINITE : static_cast<DWORD>(wait);
    if (GetQueuedCompletionStatusEx(p.ioPort, entries.data(), static_cast<ULONG>(entries.size()),
                                    &ready, ms, FALSE) == 0) {
      const DWORD err = GetLastError();
      if (err != WAIT_TIMEOUT) throw OSError(static_cast<int>(err), "poll");
      ready = 0;
    }
  }

  // 3. Run the completion of each dequeued operation (it completes futures: callbacks get queued).
  // A dequeued completion is never reported again (unlike readiness), so one that throws does not
  // stop the rest: the first exception leaves poll once every entry has run.
  std::exception_ptr failure;
  for (ULONG i = 0; i < ready; ++i) {
    try {
      processCompletion(p, entries[i]);
    } catch (...) {
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);

  // 4. Complete the timers that are due.
  detail::processTimers(p);

  // 5. Run the queued callbacks: this is where coroutines resume.
  detail::processPendingCallbacks(p);
}

void dumpDispatcher(std::ostream& os, const PDispatcher& disp) {
  if (!disp) throw ValueError("dumpDispatcher: the dispatcher is nil");
  os << "p: PDispatcher {\n";
  os << "  ioPort: Handle " << disp->ioPort << ",\n";
  std::vector<AsyncFD> fds(disp->handles.begin(), disp->handles.end());
  std::sort(fds.begin(), fds.end());
  os << "  handles: HashSet[AsyncFD] {";
  const char* comma = "";
  for (AsyncFD fd : fds) {
    os << comma << fd;
    comma = ", ";
  }
  os << "} (" << disp->pendingOperations << " operations in flight)\n";
  detail::dumpTimersAndCallbacks(os, *disp);
  os << "}\n";
}

} // namespace asyncdispatch
