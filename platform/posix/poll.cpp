// The loop of the readiness backends (epoll, kqueue, event ports), written once over the Selector
// contract: the descriptor registry, Nim's runOnce (poll) and dumpDispatcher.
#include <sys/resource.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <vector>

#include "../../src/loop.hpp"

namespace asyncdispatch {

namespace {

using detail::handle;

Selector<PData>& selector() {
  return detail::currentDispatcher().selector;
}

// Arms the kernel for exactly what the callback lists wait for (Nim's update of the key's events
// after addRead, addWrite and each dispatch).
void updateInterest(Selector<PData>& s, SocketHandle fd) {
  const PData& data = s.getData(fd);
  EventSet events;
  if (!data.readCBs.empty()) events.incl(Event::Read);
  if (!data.writeCBs.empty()) events.incl(Event::Write);
  s.updateHandle(fd, events);
}

// Which kind of key events describe: Timer, Signal, Process or User for the keys of addTimer,
// addSignal, addProcess and addEvent, Read for a descriptor's.
Event kindOf(EventSet events) {
  for (Event kind : {Event::Timer, Event::Signal, Event::Process, Event::User}) {
    if (events.contains(kind)) return kind;
  }
  return Event::Read;
}

// The fd of a timer, signal, process or event key is the library's, not a socket: the socket
// calls (closeSocket, addRead, addWrite) refuse it by name.
void checkNotCustomKey(const Selector<PData>& s, const char* op, AsyncFD fd) {
  if (kindOf(s.fds[handle(fd)].events) != Event::Read)
    throw ValueError(detail::where(op, fd) +
                     ": the descriptor of a timer, signal, process or event, not a socket");
}

PData& checkedData(const char* op, AsyncFD fd) {
  Selector<PData>& s = selector();
  if (!s.contains(handle(fd)))
    throw ValueError(detail::where(op, fd) + ": File descriptor not registered.");
  checkNotCustomKey(s, op, fd);
  return s.getData(handle(fd));
}

// Whether key still reports the registration that holds its descriptor. A callback earlier in
// the pass may have closed the descriptor, and a new socket, timer or event taken its number
// (libuv's tcp_close_accept): the report is not for that one, whose callbacks must not run.
bool stillReported(const Selector<PData>& s, const ReadyKey& key) {
  return s.contains(key.fd) && s.isCurrent(key);
}

// Runs the callbacks that were waiting on one direction of fd when it became ready, in order,
// until one returns false: that one goes back to the head of the list, with the ones after it
// still queued behind it and any added meanwhile after those (Nim's head-of-line rule). Each
// callback is taken out of the list while it runs, so one that closes fd finds the others still
// listed and fails them, and one that adds a callback cannot invalidate the list under us.
void runCallbacks(Selector<PData>& s, const ReadyKey& key, std::vector<Callback> PData::*list) {
  const SocketHandle fd = key.fd;
  std::size_t waiting = (s.getData(fd).*list).size();
  while (waiting-- > 0) {
    std::vector<Callback>& cbs = s.getData(fd).*list;
    if (cbs.empty()) return; // the rest were cancelled meanwhile
    Callback cb = std::move(cbs.front());
    cbs.erase(cbs.begin());
    bool done = false;
    try {
      done = cb(AsyncFD(fd));
    } catch (...) { // cb is dropped; what is armed must still match what waits
      if (s.contains(fd)) updateInterest(s, fd);
      throw;
    }
    // cb closed or unregistered fd, and the others were failed then; or it also registered the
    // number again, and the list is the new registration's.
    if (!stillReported(s, key)) return;
    if (!done) {
      std::vector<Callback>& again = s.getData(fd).*list;
      again.insert(again.begin(), std::move(cb));
      return;
    }
  }
}

// After a custom key's callback: Nim's runOnce unregisters the key when the callback returns true
// or the key is Finished (a oneshot timer that fired, a process that exited), which closes the
// kernel object the selector made for it; otherwise the callback waits for the next report.
void settleCustomKey(Selector<PData>& s, const ReadyKey& key, Callback cb, bool done) {
  // The callback unregistered its own key; then the number may even hold a new key.
  if (!stillReported(s, key) || kindOf(s.fds[key.fd].events) != kindOf(key.events) ||
      !s.getData(key.fd).readCBs.empty())
    return;
  if (done || key.events.contains(Event::Finished)) {
    s.unregister(key.fd);
  } else {
    s.getData(key.fd).readCBs.push_back(std::move(cb));
  }
}

// Nim's runOnce for a Timer, Signal, Process or User key: its one callback runs. It is taken out
// of the key while it runs, as in runCallbacks, so that it may unregister its own key; if it
// throws, the key is settled as if it had returned false before the exception leaves poll.
void runCustomCallback(Selector<PData>& s, const ReadyKey& key) {
  std::vector<Callback>& list = s.getData(key.fd).readCBs;
  if (list.empty()) return;
  Callback cb = std::move(list.front());
  list.clear();
  bool done = false;
  try {
    done = cb(AsyncFD(key.fd));
  } catch (...) {
    settleCustomKey(s, key, std::move(cb), false);
    throw;
  }
  settleCustomKey(s, key, std::move(cb), done);
}

// Phase 3 for one ready key (Nim's runOnce body): Read runs the read callbacks, Write the write
// callbacks, an Error alone runs both so that every waiting operation sees the error; a timer,
// signal, process or event key runs its one callback.
void processReadyKey(Selector<PData>& s, const ReadyKey& key) {
  // An earlier callback of this pass unregistered it, or closed it and registered its number
  // again (see stillReported).
  if (!stillReported(s, key)) return;
  // Its number went to another kind of key: the report is not for that key either (the one
  // check a backend that cannot tell registrations apart has).
  const Event kind = kindOf(key.events);
  if (kind != kindOf(s.fds[key.fd].events)) return;
  if (kind != Event::Read) return runCustomCallback(s, key);
  const bool onlyError = key.events == EventSet(Event::Error);
  if (key.events.contains(Event::Read) || onlyError) runCallbacks(s, key, &PData::readCBs);
  if (!stillReported(s, key)) return;
  if (key.events.contains(Event::Write) || onlyError) runCallbacks(s, key, &PData::writeCBs);
  if (stillReported(s, key)) updateInterest(s, key.fd);
}

} // namespace

namespace detail {

bool cancelWaiting(std::intptr_t fd, const FutureStateBase& fut) {
  Selector<PData>& s = selector();
  const SocketHandle h = static_cast<SocketHandle>(fd);
  if (!s.contains(h)) return false;
  PData& data = s.getData(h);
  for (std::vector<Callback>* list : {&data.readCBs, &data.writeCBs}) {
    auto it = std::find_if(list->begin(), list->end(),
                           [&](const Callback& cb) { return cb.servedFuture() == &fut; });
    if (it != list->end()) {
      list->erase(it); // the callback goes without running; fut's caller holds fut alive
      updateInterest(s, h);
      return true;
    }
  }
  return false;
}

} // namespace detail

Selector<PData>& getIoHandler(const PDispatcher& disp) {
  if (!disp) throw ValueError("getIoHandler: the dispatcher is nil");
  return disp->selector;
}

void register_(AsyncFD fd) {
  Selector<PData>& s = selector();
  if (s.contains(handle(fd)))
    throw ValueError(detail::where("register_", fd) + ": descriptor already registered");
  PData data;
  data.fd = fd;
  s.registerHandle(handle(fd), EventSet{}, std::move(data));
}

void unregister(AsyncFD fd) {
  Selector<PData>& s = selector();
  if (!s.contains(handle(fd)))
    throw ValueError(detail::where("unregister", fd) + ": descriptor not registered");
  const Event kind = kindOf(s.fds[handle(fd)].events);
  PData pending = std::move(s.getData(handle(fd)));
  s.unregister(handle(fd));
  // A timer's, signal's, process's or event's callback is not an operation to fail: it just
  // stops, as in Nim.
  if (kind == Event::Read) detail::abandonCallbacks(fd, pending, "unregistered");
}

bool contains(const PDispatcher& disp, AsyncFD fd) {
  return disp && disp->selector.contains(handle(fd));
}

void closeSocket(AsyncFD fd) {
  Selector<PData>& s = selector();
  if (!s.contains(handle(fd)))
    throw ValueError(detail::where("closeSocket", fd) + ": File descriptor not registered.");
  checkNotCustomKey(s, "closeSocket", fd);
  PData pending = std::move(s.getData(handle(fd)));
  s.unregister(handle(fd)); // before close: epoll keys registrations by open file (see epoll)
  // POSIX leaves the descriptor closed even when close fails (but for EBADF), so the pending
  // operations are failed whatever close says, and only then is its error reported.
  const int closeError = ::close(handle(fd)) != 0 && errno != EINTR ? errno : 0;
  const int stubborn = detail::abandonCallbacks(fd, pending, "closed");
  if (closeError != 0) throw OSError(closeError, detail::where("closeSocket", fd));
  if (stubborn > 0) throw ValueError("Expecting async operations to stop when fd has closed.");
}

void addRead(AsyncFD fd, Callback cb) {
  checkedData("addRead", fd).readCBs.push_back(std::move(cb));
  updateInterest(selector(), handle(fd));
}

void addWrite(AsyncFD fd, Callback cb) {
  checkedData("addWrite", fd).writeCBs.push_back(std::move(cb));
  updateInterest(selector(), handle(fd));
}

bool hasPendingOperations() {
  const Dispatcher& p = detail::currentDispatcher();
  return p.selector.count != 0 || p.timers.size() > p.cancelledTimers || !p.callbacks.empty();
}

int activeDescriptors() {
  return detail::currentDispatcher().selector.count;
}

int maxDescriptors() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) throw OSError(errno, "maxDescriptors: getrlimit");
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur > static_cast<rlim_t>(INT_MAX))
    return INT_MAX - 1;
  return static_cast<int>(limit.rlim_cur) - 1;
}

bool setInheritable(AsyncFD fd, bool inheritable) {
  const int flags = fcntl(handle(fd), F_GETFD);
  if (flags < 0) return false;
  const int wanted = inheritable ? (flags & ~FD_CLOEXEC) : (flags | FD_CLOEXEC);
  return fcntl(handle(fd), F_SETFD, wanted) == 0;
}

// Nim's poll, that is one runOnce: the five phases of a pass, top to bottom.
void poll(int timeout) {
  // A callback that polls (waitFor inside a callback) would run this pass's keys and callbacks
  // from the middle of their own dispatch; Nim lets it and breaks in subtle ways. Refused here.
  const detail::PassGuard pass;
  Dispatcher& p = detail::currentDispatcher();
  if (!hasPendingOperations()) throw ValueError("No handles or timers registered in dispatcher.");

  // 1. How long the kernel may block: not at all when callbacks are queued or a timer is due.
  const int wait = detail::adjustTimeout(p, timeout);

  // 2. Wait for readiness (into an array made once per thread, not 64 keys built per pass).
  // With nothing armed and no time to wait there is nothing to ask the kernel (libuv skips
  // the call too): a pass that only runs callbacks makes no system call.
  thread_local std::array<ReadyKey, 64> keys;
  const int ready = wait == 0 && p.selector.count == 0 ? 0 : p.selector.selectInto(wait, keys);

  // 3. Run the callbacks of each ready descriptor (they complete futures: callbacks get queued).
  for (int i = 0; i < ready; ++i)
    processReadyKey(p.selector, keys[i]);

  // 4. Complete the timers that are due.
  detail::processTimers(p);

  // 5. Run the queued callbacks: this is where coroutines resume.
  detail::processPendingCallbacks(p);
}

void dumpDispatcher(std::ostream& os, const PDispatcher& disp) {
  if (!disp) throw ValueError("dumpDispatcher: the dispatcher is nil");
  os << "p: PDispatcher {\n";
  disp->selector.dump(os);
  detail::dumpTimersAndCallbacks(os, *disp);
  os << "}\n";
}

} // namespace asyncdispatch
