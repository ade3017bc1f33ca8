// The readiness family (src/family.hpp's contract) over Selector<PData>, for every selector
// backend: a report is a ReadyKey, and what it makes ready runs through the shared phase-3 helpers
// (src/dispatch.hpp). The socket operations over this family are in net.cpp, the timers, events,
// signals and processes in events.cpp.
#include <sys/resource.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <ostream>
#include <vector>

#include "../../src/dispatch.hpp"
#include "../../src/family.hpp"
#include "../../src/loop.hpp"
#include "signals.hpp"

namespace asyncdispatch {

namespace {

using detail::handle;

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

// What a ReadyKey is for, as the phase-3 helpers ask it (src/dispatch.hpp). A callback earlier
// in the pass may have closed the key's descriptor, and a new socket, timer or event taken its
// number (libuv's tcp_close_accept): isCurrent tells the two apart, and then the report is not
// for the new one, whose callbacks must not run; a number given to another kind of key is not
// this report's either.
struct ReportedKey {
  Selector<PData>& s;
  const ReadyKey& key;

  PData* data() const {
    if (!s.contains(key.fd) || !s.isCurrent(key)) return nullptr;
    if (kindOf(s.fds[key.fd].events) != kindOf(key.events)) return nullptr;
    return &s.getData(key.fd);
  }
  void rearm() const { updateInterest(s, key.fd); }
  bool finished() const { return key.events.contains(Event::Finished); }
  // Nim's runOnce unregisters a finished key, which closes the kernel object made for it.
  void remove() const { s.unregister(key.fd); }
};

// fork(): the library's locks are held across it (the child has only the forking thread, so a
// lock another thread held would stay held there); in the child, the signals stop writing to the
// parent's pipes at once, and each thread's dispatcher is renewed at its next use.
void prepareFork() {
  detail::prepareFork();
  prepareSignalsForFork();
}

void resumeInParent() {
  resumeSignalsInParent();
  detail::resumeInParent();
}

void resumeInChild() {
  resumeSignalsInChild();
  detail::resumeInChild();
}

// Installed while the program's globals are initialised, before any thread of the library's can
// exist; pthread_atfork fails only without memory, and then a child renews nothing.
[[maybe_unused]] const bool forkHandled =
    pthread_atfork(prepareFork, resumeInParent, resumeInChild) == 0;

} // namespace

namespace detail {

// With nothing armed and no time to wait there is nothing to ask the kernel (libuv skips the
// call too): a pass that only runs callbacks makes no system call.
int Family::waitForEvents(Dispatcher& p, int timeout, std::span<ReadyKey> reports) {
  if (timeout == 0 && p.selector.count == 0) return 0;
  return p.selector.selectInto(timeout, reports);
}

// Nim's runOnce body for one key: a descriptor's read and write callbacks, or a timer's,
// signal's, process's or event's one callback.
void Family::processEvent(Dispatcher& p, const ReadyKey& key) {
  ReportedKey reported{p.selector, key};
  if (reported.data() == nullptr) return;
  if (kindOf(key.events) != Event::Read) return processCustomCallbacks(reported, AsyncFD(key.fd));
  processDescriptor(reported, AsyncFD(key.fd), key.events);
}

bool Family::hasPendingIo(const Dispatcher& p) {
  return p.selector.count != 0;
}

int Family::armedCount(const Dispatcher& p) {
  return p.selector.count;
}

void Family::registerHandle(Dispatcher& p, AsyncFD fd) {
  PData data;
  data.fd = fd;
  p.selector.registerHandle(handle(fd), EventSet{}, std::move(data));
}

bool Family::contains(const Dispatcher& p, AsyncFD fd) {
  return p.selector.contains(handle(fd));
}

bool Family::isCustomKey(const Dispatcher& p, AsyncFD fd) {
  return p.selector.contains(handle(fd)) &&
         kindOf(p.selector.fds[handle(fd)].events) != Event::Read;
}

void Family::unregisterCustom(Dispatcher& p, AsyncFD fd) {
  p.selector.unregister(handle(fd));
}

// Unregistered before it is closed: epoll keys registrations by open file, not by number.
PData Family::forget(Dispatcher& p, AsyncFD fd, const char*) {
  PData pending = std::move(p.selector.getData(handle(fd)));
  p.selector.unregister(handle(fd));
  return pending;
}

int Family::closeHandle(Dispatcher&, AsyncFD fd) {
  return ::close(handle(fd)) != 0 && errno != EINTR ? errno : 0;
}

void Family::addCallback(Dispatcher& p, const char*, AsyncFD fd, std::vector<Callback> PData::*list,
                         Callback cb) {
  (p.selector.getData(handle(fd)).*list).push_back(std::move(cb));
  updateInterest(p.selector, handle(fd));
}

// The operation's callback leaves fd's list without running; fut's caller holds fut alive.
bool Family::cancelWaiting(Dispatcher& p, AsyncFD fd, const FutureStateBase& fut) {
  Selector<PData>& s = p.selector;
  if (!s.contains(handle(fd))) return false;
  PData& data = s.getData(handle(fd));
  for (std::vector<Callback>* list : {&data.readCBs, &data.writeCBs}) {
    auto it = std::find_if(list->begin(), list->end(),
                           [&](const Callback& cb) { return cb.servedFuture() == &fut; });
    if (it != list->end()) {
      list->erase(it);
      updateInterest(s, handle(fd));
      return true;
    }
  }
  return false;
}

void Family::dump(const Dispatcher& p, std::ostream& os) {
  p.selector.dump(os);
}

// The sockets are listed before the selector forgets them; the keys of timers, signals, processes
// and events are the inherited dispatcher's and go with it.
std::vector<AsyncFD> Family::forgetAfterFork(Dispatcher& p) {
  std::vector<AsyncFD> sockets;
  for (const auto& slot : p.selector.fds) {
    if (slot.fd != InvalidIdent && kindOf(slot.events) == Event::Read)
      sockets.push_back(AsyncFD(slot.fd));
  }
  p.selector.forgetAfterFork();
  return sockets;
}

} // namespace detail

Selector<PData>& getIoHandler(const PDispatcher& disp) {
  if (!disp) throw ValueError("getIoHandler: the dispatcher is nil");
  return disp->selector;
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

} // namespace asyncdispatch
