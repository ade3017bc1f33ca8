// Timers, user events and processes of the IOCP backend (Nim's addTimer, AsyncEvent, addProcess),
// in the order of platform/posix/events.cpp. Each is a kernel object (a waitable timer, an
// auto-reset event, a process) watched by a thread-pool wait, as in Nim's Windows backend
// (RegisterWaitForSingleObject). The pool thread does one thing: post a packet to the dispatcher's
// ioPort. poll dequeues it and runs the user's callback on the dispatcher's thread, in its
// completion phase (processWait). The same waits serve addRead and addWrite, on the event that
// WSAEventSelect sets for a socket (watchSocket; the rest is in family.cpp). addSignal is final:
// Windows has no POSIX signals and Nim has no addSignal there.
//
// What is hard here:
//  1. A packet posted just before the wait is unregistered is still in the port afterwards. So a
//     packet carries the object's handle and the registration's serial number, never a pointer:
//     processWait drops one whose registration has gone or been replaced.
//  2. The pool callback may be running while the dispatcher unregisters. UnregisterWaitEx with
//     INVALID_HANDLE_VALUE returns only once it has finished, and the registration (which the
//     callback reads) is freed only after that.
//  3. Triggers and ticks that arrive before the dispatcher runs the callback coalesce into that
//     one call, as eventfd's and timerfd's do: the pool posts only when no packet of the
//     registration is waiting, and processWait clears that mark before the callback runs.
#include "../../include/asyncdispatch/events.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "../../src/dispatch.hpp"
#include "../../src/loop.hpp"
#include "../../src/trigger_gate.hpp"

namespace asyncdispatch {

namespace detail {

OVERLAPPED waitPacket{};

// Closes a kernel handle when its owner goes (RAII for every handle).
struct OwnedHandle {
  HANDLE h = nullptr;
  OwnedHandle() = default;
  explicit OwnedHandle(HANDLE handle) : h(handle) {}
  OwnedHandle(const OwnedHandle&) = delete;
  OwnedHandle& operator=(const OwnedHandle&) = delete;
  ~OwnedHandle() { reset(); }
  void reset() {
    if (h != nullptr) CloseHandle(h);
    h = nullptr;
  }
};

// What the handles of one AsyncEvent share: Nim's auto-reset CreateEvent, and which dispatcher
// watches it (addEvent), so that misuse is refused as on POSIX.
// trigger on the watching thread posts the packet itself, at once, as an eventfd is readable at
// once: a poll right after it sees the trigger, which a hop through the pool cannot promise.
struct AsyncEventState {
  TriggerGate gate;  // lets trigger race close (src/trigger_gate.hpp)
  OwnedHandle event; // nullptr once closed
  Dispatcher* watcher = nullptr;
  WaitRegistration* reg = nullptr;      // the watcher's, read only on the watching thread
  std::atomic<DWORD> watchingThread{0}; // read by trigger on any thread
};

// One armed wait. The pool callback gets a pointer to it; `waits` and processWait (while the
// callback runs, which may unregister it) share it. stop() ends the pool side for good.
struct WaitRegistration {
  HANDLE port = nullptr;
  AsyncFD fd{-1};
  std::uint32_t serial = 0;
  bool oneshot = false;
  OwnedHandle object; // the timer, the process or a socket's event; an AsyncEvent's is its own
  std::shared_ptr<AsyncEventState> event; // addEvent: keeps the event open while it is watched
  SOCKET selected = INVALID_SOCKET;       // addRead/addWrite: the socket WSAEventSelect sets for
  HANDLE wait = nullptr;
  std::atomic<bool> posted{false}; // a packet of this registration is in the port (see 3)
  bool stopped = false;

  WaitRegistration() = default;
  WaitRegistration(const WaitRegistration&) = delete;
  WaitRegistration& operator=(const WaitRegistration&) = delete;
  ~WaitRegistration() { stop(); }

  // Once: the event may be watched again, by a new registration, before this one is freed.
  void stop() {
    if (stopped) return;
    stopped = true;
    // INVALID_HANDLE_VALUE: waits for a callback in flight (see 2).
    if (wait != nullptr) UnregisterWaitEx(wait, INVALID_HANDLE_VALUE);
    wait = nullptr;
    // The socket no longer sets an event that is about to be closed (it stays non-blocking, as
    // every socket of the dispatcher is). The callers stop a socket's wait before they close it.
    if (selected != INVALID_SOCKET) WSAEventSelect(selected, nullptr, 0);
    if (event) {
      event->watcher = nullptr;
      event->reg = nullptr;
      event->watchingThread = 0;
    }
  }
};

} // namespace detail

namespace {

using detail::AsyncEventState;
using detail::WaitRegistration;

std::atomic<std::uint32_t> nextSerial{1};

// Posts r's packet unless one is already in the port (see 3).
void post(WaitRegistration* r) {
  if (r->posted.exchange(true)) return;
  if (PostQueuedCompletionStatus(r->port, r->serial, static_cast<ULONG_PTR>(r->fd),
                                 &detail::waitPacket) == 0)
    r->posted = false; // the port is full: the next signal tries again
}

// Runs on a thread-pool thread: posts, and nothing else.
void CALLBACK onSignalled(PVOID context, BOOLEAN) {
  post(static_cast<WaitRegistration*>(context));
}

// Starts the pool's wait on `object` for r, for the current dispatcher's port.
void startWait(Dispatcher& p, WaitRegistration& r, HANDLE object, const char* op) {
  r.port = p.ioPort;
  r.serial = nextSerial++;
  const ULONG flags = WT_EXECUTEINWAITTHREAD | (r.oneshot ? WT_EXECUTEONLYONCE : 0);
  if (RegisterWaitForSingleObject(&r.wait, object, onSignalled, &r, INFINITE, flags) == 0)
    throw OSError(static_cast<int>(GetLastError()), op, "RegisterWaitForSingleObject");
}

// Starts watching `object` for r and adds it to `waits` under `events`, with its one callback where
// POSIX keeps it (the key's readCBs).
void arm(Dispatcher& p, std::shared_ptr<WaitRegistration> r, HANDLE object, EventSet events,
         Callback cb, const char* op, int param = 0) {
  startWait(p, *r, object, op);
  Dispatcher::WaitKey key{events, PData{}, nullptr, param};
  key.data.fd = r->fd;
  key.data.readCBs.push_back(std::move(cb));
  key.reg = std::move(r);
  const AsyncFD fd = key.data.fd;
  p.waits[fd] = std::move(key);
}

std::shared_ptr<WaitRegistration> newRegistration(HANDLE object, bool oneshot) {
  auto r = std::make_shared<WaitRegistration>();
  r->fd = AsyncFD(reinterpret_cast<std::intptr_t>(object));
  r->oneshot = oneshot;
  return r;
}

// The shared state of an event handle that is neither nil nor closed.
AsyncEventState& openState(const char* op, const std::shared_ptr<AsyncEventState>& state) {
  if (!state) throw ValueError(std::string(op) + ": AsyncEvent is nil");
  if (state->event.h == nullptr) throw ValueError(std::string(op) + ": the AsyncEvent is closed");
  return *state;
}

AsyncFD eventFd(const AsyncEventState& state) {
  return AsyncFD(reinterpret_cast<std::intptr_t>(state.event.h));
}

} // namespace

namespace detail {

Event kindOf(EventSet events) {
  for (Event kind : {Event::Timer, Event::Process, Event::User}) {
    if (events.contains(kind)) return kind;
  }
  return Event::Read;
}

// Phase 3 for a packet of a wait registration (family.cpp's processEvent hands it over): a
// socket's readiness, or a timer's, event's or process's one callback (Nim's
// processCustomCallbacks, src/dispatch.hpp). A oneshot is gone after its callback whatever it
// returns or throws (beyond Nim, see events.hpp).
void processWait(Dispatcher& p, AsyncFD fd, DWORD serial) {
  const auto it = p.waits.find(fd);
  if (it == p.waits.end() || it->second.reg->serial != serial) return; // gone meanwhile (see 1)
  const std::shared_ptr<WaitRegistration> r = it->second.reg;
  r->posted = false; // before the callbacks: a signal from now on is a new call (see 3)
  if (kindOf(it->second.events) == Event::Read) return processReadiness(p, fd);
  // An event set again since the pool's wait consumed it is covered by this call, as one read
  // of an eventfd covers every trigger before it.
  if (r->event) WaitForSingleObject(r->event->event.h, 0);
  WaitView key{p, fd, r.get()};
  processCustomCallbacks(key, fd);
}

std::shared_ptr<WaitRegistration> watchSocket(const char* op, Dispatcher& p, AsyncFD fd) {
  OwnedHandle event(CreateEventW(nullptr, FALSE, FALSE, nullptr)); // auto-reset: the wait takes it
  if (event.h == nullptr) throw OSError(static_cast<int>(GetLastError()), where(op, fd));
  auto r = std::make_shared<WaitRegistration>();
  r->fd = fd;
  std::swap(r->object.h, event.h);
  startWait(p, *r, r->object.h, op);
  r->selected = handle(fd); // only once the wait runs: stop() then undoes WSAEventSelect
  return r;
}

HANDLE eventOf(const WaitRegistration& reg) {
  return reg.object.h;
}

void postNow(WaitRegistration& reg) {
  post(&reg);
}

bool unregisterWait(Dispatcher& p, AsyncFD fd) {
  const auto it = p.waits.find(fd);
  if (it == p.waits.end()) return false;
  const std::shared_ptr<WaitRegistration> r = std::move(it->second.reg);
  p.waits.erase(it);
  r->stop(); // before the event may be closed: never a wait on a closed handle
  return true;
}

} // namespace detail

// Nim's addTimer on Windows: a synchronization (auto-reset) waitable timer, periodic unless
// oneshot, so a tick the dispatcher has not seen yet coalesces with the next as timerfd's do.
void addTimer(int timeout, bool oneshot, Callback cb) {
  detail::checkCallback("addTimer", cb);
  if (timeout <= 0)
    throw ValueError("addTimer: timeout must be positive, got " + std::to_string(timeout));
  Dispatcher& p = detail::currentDispatcher();
  detail::OwnedHandle timer(CreateWaitableTimerW(nullptr, FALSE, nullptr));
  if (timer.h == nullptr) throw OSError(static_cast<int>(GetLastError()), "addTimer");
  LARGE_INTEGER due;
  due.QuadPart = -10'000LL * timeout; // relative, in 100 ns units
  if (SetWaitableTimer(timer.h, &due, oneshot ? 0 : timeout, nullptr, nullptr, FALSE) == 0)
    throw OSError(static_cast<int>(GetLastError()), "addTimer");
  auto r = newRegistration(timer.h, oneshot);
  std::swap(r->object.h, timer.h);
  const HANDLE object = r->object.h;
  arm(p, std::move(r), object,
      oneshot ? EventSet{Event::Timer, Event::Oneshot} : EventSet{Event::Timer}, std::move(cb),
      "addTimer");
}

// Nim's newAsyncEvent on Windows: an auto-reset event (not inheritable here: Nim's is, which
// leaks it into every child process).
AsyncEvent newAsyncEvent() {
  auto state = std::make_shared<AsyncEventState>();
  state->event.h = CreateEventW(nullptr, FALSE, FALSE, nullptr);
  if (state->event.h == nullptr) throw OSError(static_cast<int>(GetLastError()), "newAsyncEvent");
  return AsyncEvent(std::move(state));
}

// Nim's trigger on Windows: SetEvent, safe from any thread.
void trigger(AsyncEvent ev) {
  if (!ev.state_) throw ValueError("trigger: AsyncEvent is nil");
  if (!ev.state_->gate.enter()) throw ValueError("trigger: the AsyncEvent is closed");
  const detail::TriggerPass pass(ev.state_->gate);
  AsyncEventState& state = openState("trigger", ev.state_);
  if (state.watchingThread.load() == GetCurrentThreadId() && state.reg != nullptr) {
    post(state.reg);
    return;
  }
  if (SetEvent(state.event.h) == 0)
    throw OSError(static_cast<int>(GetLastError()), detail::where("trigger", eventFd(state)));
}

void addEvent(AsyncEvent ev, Callback cb) {
  detail::checkCallback("addEvent", cb);
  AsyncEventState& state = openState("addEvent", ev.state_);
  Dispatcher& p = detail::currentDispatcher();
  if (state.watcher != nullptr)
    throw ValueError(detail::where("addEvent", eventFd(state)) +
                     (state.watcher == &p ? ": the event is already registered"
                                          : ": the event is already registered by another "
                                            "thread's dispatcher"));
  auto r = newRegistration(state.event.h, false);
  r->event = ev.state_;
  WaitRegistration* const reg = r.get();
  arm(p, std::move(r), state.event.h, EventSet{Event::User}, std::move(cb), "addEvent");
  state.watcher = &p;
  state.reg = reg;
  state.watchingThread = GetCurrentThreadId();
}

void unregister(AsyncEvent ev) {
  AsyncEventState& state = openState("unregister", ev.state_);
  Dispatcher& p = detail::currentDispatcher();
  if (state.watcher != &p || !detail::unregisterWait(p, eventFd(state)))
    throw ValueError(detail::where("unregister", eventFd(state)) + ": the event is not registered");
}

void close(AsyncEvent ev) {
  if (!ev.state_) throw ValueError("close: AsyncEvent is nil");
  AsyncEventState& state = *ev.state_;
  if (state.event.h == nullptr) return;
  // Beyond Nim: a watched event stops being waited on before its handle is closed.
  if (state.watcher != nullptr) {
    Dispatcher& p = detail::currentDispatcher();
    if (state.watcher == &p) detail::unregisterWait(p, eventFd(state));
  }
  // Beyond Nim: no trigger still on its way to SetEvent may meet the handle closed.
  state.gate.shut();
  state.event.reset();
}

// Nim's addProcess on Windows: OpenProcess(SYNCHRONIZE) and a one-shot wait; a process that has
// already exited is signalled at once. The callback's result is ignored, as in Nim. Beyond Nim,
// the handle may also be queried, so the callback can read the exit code from the handle it
// gets (GetExitCodeProcess), as a POSIX one may waitpid; a process that refuses that is still
// waited for.
void addProcess(int pid, Callback cb) {
  detail::checkCallback("addProcess", cb);
  const std::string name = "addProcess(pid " + std::to_string(pid) + ")";
  if (pid <= 0) throw ValueError(name + ": not a process id"); // POSIX's words
  Dispatcher& p = detail::currentDispatcher();
  const DWORD id = static_cast<DWORD>(pid);
  detail::OwnedHandle process(
      OpenProcess(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION, FALSE, id));
  if (process.h == nullptr && GetLastError() == ERROR_ACCESS_DENIED)
    process.h = OpenProcess(SYNCHRONIZE, FALSE, id);
  if (process.h == nullptr) throw OSError(static_cast<int>(GetLastError()), name);
  auto r = newRegistration(process.h, true);
  std::swap(r->object.h, process.h);
  const HANDLE object = r->object.h;
  arm(p, std::move(r), object, EventSet{Event::Process, Event::Oneshot}, std::move(cb),
      "addProcess", pid);
}

// Windows has no POSIX signals, and Nim has no addSignal there: refused, naming the signal.
void addSignal(int signal, Callback) {
  throw OSError(ERROR_NOT_SUPPORTED, "addSignal(signal " + std::to_string(signal) + ")",
                "not supported on Windows");
}

} // namespace asyncdispatch
