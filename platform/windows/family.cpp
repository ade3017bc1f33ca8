// The completion family (src/family.hpp's contract) over IOCP: a report is a dequeued
// OVERLAPPED_ENTRY, the completion of an overlapped operation (net.cpp) or a packet that a
// thread-pool wait posted for a timer, event, process or watched socket (events.cpp). The
// readiness that addRead and addWrite need is emulated here (readyNow, updateInterest).
#include <algorithm>
#include <array>
#include <memory>
#include <ostream>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../../src/dispatch.hpp"
#include "../../src/family.hpp"
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

// The callback lists of a registered socket: its key in `waits`, made with its wait on first use.
PData& watchedData(Dispatcher& p, const char* op, AsyncFD fd) {
  auto it = p.waits.find(fd);
  if (it == p.waits.end()) {
    Dispatcher::WaitKey key{EventSet{}, PData{}, detail::watchSocket(op, p, fd)};
    key.data.fd = fd;
    it = p.waits.emplace(fd, std::move(key)).first;
  }
  return it->second.data;
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

} // namespace

namespace detail {

PData* WaitView::data() const {
  Dispatcher::WaitKey* key = socketKey(p, fd, reg);
  return key != nullptr ? &key->data : nullptr;
}

void WaitView::rearm() const {
  updateInterest("poll", p, fd);
}

bool WaitView::finished() const {
  return p.waits.at(fd).events.contains(Event::Oneshot);
}

void WaitView::remove() const {
  unregisterWait(p, fd);
}

// Phase 3 for a socket's packet (after processWait has found it): what the socket is ready for
// now runs its callbacks, as a ready key does on POSIX.
void processReadiness(Dispatcher& p, AsyncFD fd) {
  const std::shared_ptr<WaitRegistration> r = p.waits.at(fd).reg;
  WaitView view{p, fd, r.get()};
  processDescriptor(view, fd, readyNow(handle(fd)));
}

// Nim's Windows runOnce waits with a timeout even when nothing is in flight; with nothing in
// flight and no time to wait there is nothing to ask the kernel, and with nothing in flight but a
// timer ahead the wait is the sleep until it. Up to 64 completions per call (Nim takes one).
int Family::waitForEvents(Dispatcher& p, int timeout, std::span<OVERLAPPED_ENTRY> reports) {
  if (timeout == 0 && p.pendingOperations == 0 && p.waits.empty()) return 0;
  const DWORD ms = timeout < 0 ? INFINITE : static_cast<DWORD>(timeout);
  ULONG ready = 0;
  if (GetQueuedCompletionStatusEx(p.ioPort, reports.data(), static_cast<ULONG>(reports.size()),
                                  &ready, ms, FALSE) == 0) {
    const DWORD err = GetLastError();
    if (err != WAIT_TIMEOUT) throw OSError(static_cast<int>(err), "poll");
    return 0;
  }
  return static_cast<int>(ready);
}

// Nim's runOnce body for one completion: the CustomOverlapped goes back from the port to us (see
// dispatcher.hpp, 1) and is freed after its callback, whatever it does. A packet without an
// OVERLAPPED was posted by hand and carries nothing to run.
void Family::processEvent(Dispatcher& p, const OVERLAPPED_ENTRY& entry) {
  if (entry.lpOverlapped == &waitPacket) {
    processWait(p, AsyncFD(entry.lpCompletionKey), entry.dwNumberOfBytesTransferred);
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

// Abandoned operations whose completion is still to be dequeued are not pending: their futures
// have failed, and the next pass that waits collects them.
bool Family::hasPendingIo(const Dispatcher& p) {
  return p.pendingOperations > p.abandonedOperations || !p.waits.empty();
}

// Each descriptor with a socket operation in flight, a call of the application's own (newCustom)
// or a callback waiting counts once (DESIGN §5), and each timer, event and process once: what
// POSIX's selector.count counts, where Nim's Windows counts every registered handle.
int Family::armedCount(const Dispatcher& p) {
  int waitsAlone = 0;
  for (const auto& [fd, key] : p.waits)
    waitsAlone += p.operations.contains(fd) ? 0 : 1;
  std::unordered_set<AsyncFD> customAlone;
  for (const CustomOverlapped* ov : p.customOperations) {
    if (!p.operations.contains(ov->data.fd) && !p.waits.contains(ov->data.fd))
      customAlone.insert(ov->data.fd);
  }
  return static_cast<int>(p.operations.size() + customAlone.size()) + waitsAlone;
}

// Nim's register on Windows: associates fd with the completion port, keyed by fd itself, so
// every overlapped operation on it completes there. A handle unregistered earlier is still
// associated with ioPort (see dispatcher.hpp, 3), which Windows refuses to do again: then
// registering it again only has to list it.
void Family::registerHandle(Dispatcher& p, AsyncFD fd) {
  p.associated.reserve(p.associated.size() + 1);
  if (CreateIoCompletionPort(reinterpret_cast<HANDLE>(handle(fd)), p.ioPort,
                             static_cast<ULONG_PTR>(handle(fd)), 1) == nullptr) {
    const DWORD err = GetLastError();
    if (err != ERROR_INVALID_PARAMETER || !p.associated.contains(fd))
      throw OSError(static_cast<int>(err), where("register_", fd));
  }
  p.handles.insert(fd);
  p.associated.insert(fd);
}

bool Family::contains(const Dispatcher& p, AsyncFD fd) {
  return p.handles.contains(fd);
}

bool Family::isCustomKey(const Dispatcher& p, AsyncFD fd) {
  const auto it = p.waits.find(fd);
  return it != p.waits.end() && kindOf(it->second.events) != Event::Read;
}

void Family::unregisterCustom(Dispatcher& p, AsyncFD fd) {
  unregisterWait(p, fd);
}

// The handle stays associated with the port (see dispatcher.hpp, 3). Its wait stops before the
// socket may be closed, so that WSAEventSelect is undone on the live socket, and its calls in
// flight are cancelled and failed.
PData Family::forget(Dispatcher& p, AsyncFD fd, const char* why) {
  p.handles.erase(fd);
  PData pending = takeCallbacks(p, fd);
  abandon(p, fd, why, true);
  return pending;
}

// closesocket aborts every overlapped call on the socket; its number may go to a new handle,
// never associated.
int Family::closeHandle(Dispatcher& p, AsyncFD fd) {
  p.associated.erase(fd);
  return closesocket(handle(fd)) != 0 ? WSAGetLastError() : 0;
}

// Nim's addRead/addWrite on Windows wait with WSAEventSelect and RegisterWaitForSingleObject, one
// registration per call, so only the last callback of a socket is ever called (Nim issue #25034).
// Here a socket has one registration and the lists of POSIX's PData: every callback is called.
void Family::addCallback(Dispatcher& p, const char* op, AsyncFD fd,
                         std::vector<Callback> PData::*list, Callback cb) {
  PData& data = watchedData(p, op, fd);
  try {
    (data.*list).push_back(std::move(cb));
  } catch (...) {
    updateInterest(op, p, fd); // a key made for nothing does not stay armed
    throw;
  }
  updateInterest(op, p, fd);
}

// A proactor cancels in the kernel (CONTRIBUTING.md, cancellation): CancelIoEx on the operation's
// OVERLAPPED, and cancel() fails the future at once. The OVERLAPPED and its buffer stay with the
// port until the aborted completion is dequeued, which then does nothing (claim in net.cpp). A
// call that had already completed cannot be cancelled: what it did (bytes read, a connection
// accepted and then closed with its state) is lost with the future.
bool Family::cancelWaiting(Dispatcher& p, AsyncFD fd, const FutureStateBase& fut) {
  const auto it = p.operations.find(fd);
  if (it == p.operations.end()) return false;
  std::vector<Dispatcher::InFlight>& list = it->second;
  const auto op = std::find_if(list.begin(), list.end(), [&](const Dispatcher::InFlight& o) {
    return &stateOf(o.fut) == &fut;
  });
  if (op == list.end()) return false;
  CancelIoEx(reinterpret_cast<HANDLE>(handle(fd)), op->ov);
  list.erase(op);
  if (list.empty()) p.operations.erase(it);
  ++p.abandonedOperations;
  return true;
}

// Nim's Windows drawing: ioPort, the handles (each with the operations in flight on it, by name),
// and the waits, keyed and printed as the POSIX selector prints its fds.
void Family::dump(const Dispatcher& p, std::ostream& os) {
  const Dispatcher* disp = &p;
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
}

// Windows has no fork(): the fork count that calls this never changes there.
std::vector<AsyncFD> Family::forgetAfterFork(Dispatcher&) {
  return {};
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

// Nim's maxDescriptors on Windows: 16_700_000, the most handles a Windows process can hold.
int maxDescriptors() {
  return 16'700'000;
}

// Nim's setInheritable on Windows: the handle's HANDLE_FLAG_INHERIT.
bool setInheritable(AsyncFD fd, bool inheritable) {
  return SetHandleInformation(reinterpret_cast<HANDLE>(handle(fd)), HANDLE_FLAG_INHERIT,
                              inheritable ? HANDLE_FLAG_INHERIT : 0) != 0;
}

} // namespace asyncdispatch
