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
#include <utility>
#include <vector>

#include "../../src/loop.hpp"

namespace asyncdispatch {

namespace {

using detail::handle;
using detail::kindOf;

// The network events WSAEventSelect signals for each direction: Nim's masks for addRead and
// addWrite.
constexpr long kReadEvents = FD_READ | FD_ACCEPT | FD_OOB | FD_CLOSE;
constexpr long kWriteEvents = FD_WRITE | FD_CONNECT | FD_CLOSE;

// What the socket is ready for at this instant, as select() with no wait says: Read (data, a
// peer's close, a connection to accept), Write (room, a connect that succeeded), Error (a connect
// that failed). WSAEventSelect only says that something happened since it was armed; this is
// the level that epoll would report, which keeps addRead and addWrite level-triggered as on POSIX.
EventSet readyNow(SOCKET s) {
  fd_set readable;
  fd_set writable;
  fd_set failed;
  FD_ZERO(&readable);
  FD_ZERO(&writable);
  FD_ZERO(&failed);
  FD_SET(s, &readable);
  FD_SET(s, &writable);
  FD_SET(s, &failed);
  timeval now{0, 0};
  if (select(0, &readable, &writable, &failed, &now) == SOCKET_ERROR) return EventSet(Event::Error);
  EventSet ready;
  if (FD_ISSET(s, &readable)) ready.incl(Event::Read);
  if (FD_ISSET(s, &writable)) ready.incl(Event::Write);
  if (FD_ISSET(s, &failed)) ready.incl(Event::Error);
  return ready;
}

// The key addRead and addWrite keep for fd in `waits`, if it is still the one of registration r
// (a callback may close fd, or let every callback go and add one again: a new key).
Dispatcher::WaitKey* socketKey(Dispatcher& p, AsyncFD fd, const detail::WaitRegistration* r) {
  const auto it = p.waits.find(fd);
  return it != p.waits.end() && it->second.reg.get() == r ? &it->second : nullptr;
}

// Arms WSAEventSelect for exactly what the callback lists wait for (Nim's update of the key's
// events after addRead, addWrite and each dispatch); a socket that nothing waits on any more
// leaves `waits`. WSAEventSelect signals only changes, so a direction that is ready already is
// posted now: a callback that returned false is called again in the next pass while the socket
// stays ready, as epoll's level-triggered report does.
void updateInterest(const char* op, Dispatcher& p, AsyncFD fd) {
  const auto it = p.waits.find(fd);
  if (it == p.waits.end()) return;
  Dispatcher::WaitKey& key = it->second;
  EventSet events;
  long mask = 0;
  if (!key.data.readCBs.empty()) {
    events.incl(Event::Read);
    mask |= kReadEvents;
  }
  if (!key.data.writeCBs.empty()) {
    events.incl(Event::Write);
    mask |= kWriteEvents;
  }
  if (events.empty()) {
    detail::unregisterWait(p, fd);
    return;
  }
  key.events = events;
  if (WSAEventSelect(handle(fd), detail::eventOf(*key.reg), mask) != 0)
    throw OSError(WSAGetLastError(), detail::where(op, fd), "WSAEventSelect");
  const EventSet ready = readyNow(handle(fd));
  if (ready.contains(Event::Error) ||
      (ready.contains(Event::Read) && events.contains(Event::Read)) ||
      (ready.contains(Event::Write) && events.contains(Event::Write)))
    detail::postNow(*key.reg);
}

// The socket calls (closeSocket, addRead, addWrite) refuse a timer's, event's or process's handle
// by name, as POSIX refuses their keys.
void checkNotLibraryKey(const Dispatcher& p, const char* op, AsyncFD fd) {
  const auto it = p.waits.find(fd);
  if (it != p.waits.end() && kindOf(it->second.events) != Event::Read)
    throw ValueError(detail::where(op, fd) +
                     ": the descriptor of a timer, signal, process or event, not a socket");
}

// The callback lists of a registered socket: its key in `waits`, made with its wait on first use.
PData& watchedData(Dispatcher& p, const char* op, AsyncFD fd) {
  checkNotLibraryKey(p, op, fd);
  if (!p.handles.contains(fd))
    throw ValueError(detail::where(op, fd) + ": File descriptor not registered.");
  auto it = p.waits.find(fd);
  if (it == p.waits.end()) {
    Dispatcher::WaitKey key{EventSet{}, PData{}, detail::watchSocket(op, p, fd)};
    key.data.fd = fd;
    it = p.waits.emplace(fd, std::move(key)).first;
  }
  return it->second.data;
}

// Nim's addRead/addWrite body: the callback joins its list, and the socket is armed for it.
void addCallback(const char* op, AsyncFD fd, std::vector<Callback> PData::*list, Callback cb) {
  Dispatcher& p = detail::currentDispatcher();
  PData& data = watchedData(p, op, fd);
  try {
    (data.*list).push_back(std::move(cb));
  } catch (...) {
    updateInterest(op, p, fd); // a key made for nothing does not stay armed
    throw;
  }
  updateInterest(op, p, fd);
}

// Runs the callbacks that were waiting on one direction of fd when it became ready, in order,
// until one returns false: that one goes back to the head of the list, with the ones after it
// still queued behind it and any added meanwhile after those (Nim's head-of-line rule), exactly
// as platform/posix/poll.cpp's runCallbacks. Each callback is taken out of the list while it
// runs, so one that closes fd finds the others still listed and fails them.
void runCallbacks(Dispatcher& p, AsyncFD fd, const detail::WaitRegistration* r,
                  std::vector<Callback> PData::*list) {
  std::size_t waiting = (socketKey(p, fd, r)->data.*list).size();
  while (waiting-- > 0) {
    std::vector<Callback>& cbs = socketKey(p, fd, r)->data.*list;
    if (cbs.empty()) return;
    Callback cb = std::move(cbs.front());
    cbs.erase(cbs.begin());
    bool done = false;
    try {
      done = cb(fd);
    } catch (...) { // cb is dropped; what is armed must still match what waits
      if (socketKey(p, fd, r) != nullptr) updateInterest("poll", p, fd);
      throw;
    }
    Dispatcher::WaitKey* key = socketKey(p, fd, r);
    if (key == nullptr) return; // cb closed or unregistered fd; the others were failed then
    if (!done) {
      std::vector<Callback>& again = key->data.*list;
      again.insert(again.begin(), std::move(cb));
      return;
    }
  }
}

// Takes fd's callbacks out of `waits` and stops its wait (before the socket may be closed, so
// that WSAEventSelect is undone on the live socket): closeSocket and unregister then fail them.
PData takeCallbacks(Dispatcher& p, AsyncFD fd) {
  const auto it = p.waits.find(fd);
  if (it == p.waits.end()) return PData{};
  PData data = std::move(it->second.data);
  detail::unregisterWait(p, fd);
  return data;
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
  if (!p.customOperations.empty()) p.customOperations.erase(ov.get());
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

// Phase 3 for a socket's packet (Nim's runOnce body for a ready key, after processWait has found
// it): Read runs the read callbacks, Write the write callbacks, an Error alone both, then the
// socket is armed again for what is left.
void processReadiness(Dispatcher& p, AsyncFD fd) {
  const std::shared_ptr<WaitRegistration> r = p.waits.at(fd).reg;
  const EventSet ready = readyNow(handle(fd));
  const bool onlyError = ready == EventSet(Event::Error);
  if (ready.contains(Event::Read) || onlyError) runCallbacks(p, fd, r.get(), &PData::readCBs);
  if (socketKey(p, fd, r.get()) == nullptr) return;
  if (ready.contains(Event::Write) || onlyError) runCallbacks(p, fd, r.get(), &PData::writeCBs);
  if (socketKey(p, fd, r.get()) != nullptr) updateInterest("poll", p, fd);
}

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

// How long the destructor waits for the completions of the calls it cancelled, per batch: a
// cancelled call completes at once (with ERROR_OPERATION_ABORTED, or its result if it won the
// race), so a second of silence means one will not come.
constexpr DWORD kTeardownWaitMs = 1000;

Dispatcher::~Dispatcher() {
  suspended.destroyAll();
  waits.clear(); // stops every thread-pool wait before the port they post to is closed
  // The calls still listed are cancelled (abandoned ones were cancelled or closed already), and
  // every CustomOverlapped in flight is taken back from the port as its completion arrives
  // (see dispatcher.hpp, 1): nothing is left for the kernel to write into once this returns.
  // Their callbacks do not run (the futures they would finish have lost their dispatcher); the
  // state each owns, an accepted client socket included, is freed with it.
  for (const auto& [fd, ops] : operations) {
    for (const InFlight& op : ops)
      CancelIoEx(reinterpret_cast<HANDLE>(handle(fd)), op.ov);
  }
  operations.clear();
  for (CustomOverlapped* ov : customOperations)
    CancelIoEx(reinterpret_cast<HANDLE>(handle(ov->data.fd)), ov);
  customOperations.clear();
  std::array<OVERLAPPED_ENTRY, 64> entries;
  while (pendingOperations > 0) {
    ULONG ready = 0;
    // A completion that never comes keeps its OVERLAPPED: leaked, never freed under the kernel.
    if (GetQueuedCompletionStatusEx(ioPort, entries.data(), static_cast<ULONG>(entries.size()),
                                    &ready, kTeardownWaitMs, FALSE) == 0)
      break;
    for (ULONG i = 0; i < ready; ++i) {
      OVERLAPPED* ov = entries[i].lpOverlapped;
      if (ov == nullptr || ov == &detail::waitPacket) continue;
      delete static_cast<CustomOverlapped*>(ov);
      --pendingOperations;
    }
  }
  CloseHandle(ioPort);
}

CustomRef newCustom() {
  return CustomRef(detail::currentDispatcher(), new CustomOverlapped{});
}

OVERLAPPED* CustomRef::release() {
  if (ov_ == nullptr) throw ValueError("CustomRef::release: already released");
  p_->customOperations.insert(ov_); // first: if it throws, the caller still owns the OVERLAPPED
  ++p_->pendingOperations;
  return std::exchange(ov_, nullptr);
}

HANDLE getIoHandler(const PDispatcher& disp) {
  if (!disp) throw ValueError("getIoHandler: the dispatcher is nil");
  return disp->ioPort;
}

// Nim's register on Windows: associates fd with the completion port, keyed by fd itself, so
// every overlapped operation on it completes there.
// A handle unregistered earlier is still associated with ioPort (see dispatcher.hpp, 3), which
// Windows refuses to do again: then registering it again only has to list it.
void register_(AsyncFD fd) {
  Dispatcher& p = detail::currentDispatcher();
  if (p.handles.contains(fd))
    throw ValueError(detail::where("register_", fd) + ": descriptor already registered");
  p.associated.reserve(p.associated.size() + 1);
  if (CreateIoCompletionPort(reinterpret_cast<HANDLE>(handle(fd)), p.ioPort,
                             static_cast<ULONG_PTR>(handle(fd)), 1) == nullptr) {
    const DWORD err = GetLastError();
    if (err != ERROR_INVALID_PARAMETER || !p.associated.contains(fd))
      throw OSError(static_cast<int>(err), detail::where("register_", fd));
  }
  p.handles.insert(fd);
  p.associated.insert(fd);
}

// Nim's unregister on Windows: forgets fd (the port association stays; see dispatcher.hpp, 3).
// Beyond Nim, pending operations are cancelled and fail with "unregistered", and the callbacks of
// addRead and addWrite are called once more, as on POSIX. A timer's, event's or process's handle
// just stops, as in Nim.
void unregister(AsyncFD fd) {
  Dispatcher& p = detail::currentDispatcher();
  const auto key = p.waits.find(fd);
  if (key != p.waits.end() && kindOf(key->second.events) != Event::Read) {
    detail::unregisterWait(p, fd);
    return;
  }
  if (!p.handles.contains(fd))
    throw ValueError(detail::where("unregister", fd) + ": descriptor not registered");
  p.handles.erase(fd);
  PData pending = takeCallbacks(p, fd);
  abandon(p, fd, "unregistered", true);
  detail::abandonCallbacks(fd, pending, "unregistered");
}

bool contains(const PDispatcher& disp, AsyncFD fd) {
  return disp && disp->handles.contains(fd);
}

// Nim's closeSocket on Windows: closesocket, which aborts every overlapped call on the socket;
// beyond Nim, each pending operation fails once with ERROR_OPERATION_ABORTED naming it, as on
// POSIX (where the code is EBADF), and so does each callback of addRead and addWrite.
void closeSocket(AsyncFD fd) {
  Dispatcher& p = detail::currentDispatcher();
  checkNotLibraryKey(p, "closeSocket", fd);
  if (!p.handles.contains(fd))
    throw ValueError(detail::where("closeSocket", fd) + ": File descriptor not registered.");
  p.handles.erase(fd);
  p.associated.erase(fd); // its number may go to a new handle, never associated
  PData pending = takeCallbacks(p, fd);
  const int closeError = closesocket(handle(fd)) != 0 ? WSAGetLastError() : 0;
  abandon(p, fd, "closed", false);
  const int stubborn = detail::abandonCallbacks(fd, pending, "closed");
  if (closeError != 0) throw OSError(closeError, detail::where("closeSocket", fd));
  if (stubborn > 0) throw ValueError("Expecting async operations to stop when fd has closed.");
}

// Nim's addRead/addWrite on Windows wait with WSAEventSelect and RegisterWaitForSingleObject, one
// registration per call, so only the last callback of a socket is ever called (Nim issue #25034).
// Here a socket has one registration and the lists of POSIX's PData: every callback is called.
void addRead(AsyncFD fd, Callback cb) {
  addCallback("addRead", fd, &PData::readCBs, std::move(cb));
}

void addWrite(AsyncFD fd, Callback cb) {
  addCallback("addWrite", fd, &PData::writeCBs, std::move(cb));
}

// Abandoned operations whose completion is still to be dequeued are not pending: their futures
// have failed, and the next pass that waits collects them.
bool hasPendingOperations() {
  const Dispatcher& p = detail::currentDispatcher();
  return p.pendingOperations > p.abandonedOperations || !p.waits.empty() ||
         p.timers.size() > p.cancelledTimers || !p.callbacks.empty();
}

// Each descriptor with a socket operation in flight or a callback waiting counts once (DESIGN §5),
// and each timer, event and process once.
int activeDescriptors() {
  const Dispatcher& p = detail::currentDispatcher();
  int waitsAlone = 0;
  for (const auto& [fd, key] : p.waits)
    waitsAlone += p.operations.contains(fd) ? 0 : 1;
  return static_cast<int>(p.operations.size()) + waitsAlone;
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

// Nim's Windows drawing: ioPort, the handles (each with the operations in flight on it, by name),
// and the waits, keyed and printed as the POSIX selector prints its fds.
void dumpDispatcher(std::ostream& os, const PDispatcher& disp) {
  if (!disp) throw ValueError("dumpDispatcher: the dispatcher is nil");
  os << "p: PDispatcher {\n";
  os << "  ioPort: Handle " << disp->ioPort << ",\n";
  std::vector<AsyncFD> fds(disp->handles.begin(), disp->handles.end());
  std::sort(fds.begin(), fds.end());
  os << "  handles: HashSet[AsyncFD] {";
  const char* sep = "\n";
  for (AsyncFD fd : fds) {
    os << sep << "    " << fd;
    const auto ops = disp->operations.find(fd);
    if (ops != disp->operations.end()) {
      os << " (in flight:";
      const char* comma = " ";
      for (const Dispatcher::InFlight& op : ops->second) {
        os << comma << op.op;
        comma = ", ";
      }
      os << ")";
    }
    sep = ",\n";
  }
  os << (fds.empty() ? "}" : "\n  }") << " (" << disp->pendingOperations
     << " CustomOverlapped in flight, " << disp->abandonedOperations << " of them abandoned),\n";
  std::vector<AsyncFD> waited;
  for (const auto& [fd, key] : disp->waits)
    waited.push_back(fd);
  std::sort(waited.begin(), waited.end());
  os << "  waits: Table[AsyncFD, WaitKey] {";
  sep = "\n";
  for (AsyncFD fd : waited) {
    const Dispatcher::WaitKey& key = disp->waits.at(fd);
    os << sep << "    " << fd << ": WaitKey { fd: " << fd << ", events: " << key.events;
    if (key.events.contains(Event::Process)) os << ", param: " << key.param;
    os << ", data: " << key.data << " }";
    sep = ",\n";
  }
  os << (waited.empty() ? "},\n" : "\n  },\n");
  detail::dumpTimersAndCallbacks(os, *disp);
  os << "}\n";
}

} // namespace asyncdispatch
