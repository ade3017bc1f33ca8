// Selector over event ports; the list of what is hard about event ports opens selector.hpp. Only
// interfaces of the illumos man pages are used: port_create, port_associate, port_dissociate,
// port_getn (3C), timer_create, timer_settime, timer_delete (3C) and POSIX.
#include "selector.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "../posix/keys.hpp"

namespace asyncdispatch {

namespace {

static_assert(sizeof(void*) >= sizeof(std::uint64_t), "portev_user carries fd and generation");

int toPollEvents(EventSet events) {
  int mask = 0;
  if (events.contains(Event::Read)) mask |= POLLIN;
  if (events.contains(Event::Write)) mask |= POLLOUT;
  return mask;
}

// What a key asks the port for: a user event's pipe is read, a descriptor's key says.
int interestOf(EventSet events) {
  return events.contains(Event::User) ? POLLIN : toPollEvents(events);
}

// port_getn's timeout: NULL waits forever, a zeroed one polls.
const timespec_t* toTimespec(int timeout, timespec_t& ts) {
  if (timeout < 0) return nullptr;
  ts.tv_sec = timeout / 1000;
  ts.tv_nsec = static_cast<long>(timeout % 1000) * 1000000;
  return &ts;
}

} // namespace

template <class T>
typename Selector<T>::Slot& Selector<T>::checkedKey(const char* op, SocketHandle fd) {
  if (!contains(fd)) throw ValueError(where(op, fd) + ": descriptor not registered");
  return fds[fd];
}

// portev_user of fd's events: the descriptor in the low 32 bits, its generation in the high 32.
template <class T>
void* Selector<T>::cookieOf(SocketHandle fd) const {
  const std::uint64_t tag =
      static_cast<std::uint64_t>(fds[fd].generation) << 32 | static_cast<std::uint32_t>(fd);
  return reinterpret_cast<void*>(static_cast<std::uintptr_t>(tag));
}

// The slot of fd, which must be free, for a new registration: with a new generation (see 4).
template <class T>
typename Selector<T>::Slot& Selector<T>::freeSlot(const char* op, SocketHandle fd) {
  if (fd < 0) throw ValueError(where(op, fd) + ": not a descriptor");
  if (static_cast<std::size_t>(fd) >= fds.size())
    fds.resize(std::max<std::size_t>({static_cast<std::size_t>(fd) + 1, fds.size() * 2, 1024}));
  if (fds[fd].fd != InvalidIdent)
    throw ValueError(where(op, fd) + ": descriptor already registered");
  ++fds[fd].generation;
  return fds[fd];
}

// Fills a timer's, signal's, process's or event's slot: it is armed at once and counts until
// it is Finished or unregistered.
template <class T>
void Selector<T>::addKey(Slot& slot, SocketHandle fd, EventSet events, T data, int param) {
  slot.fd = fd;
  slot.events = events;
  slot.data = std::move(data);
  slot.param = param;
  ++count;
}

// Keeps the invariant of 1 for a slot that is not pending: the port holds exactly its interest.
// Re-associating replaces the mask; dissociating what the port no longer holds gives ENOENT, and
// a descriptor closed behind the selector's back has left the port already (EBADF, EBADFD).
template <class T>
void Selector<T>::associate(Slot& slot, const char* op) {
  const int mask = interestOf(slot.events);
  if (mask == slot.associated) return;
  if (mask != 0) {
    if (port_associate(portFD, PORT_SOURCE_FD, static_cast<std::uintptr_t>(slot.fd), mask,
                       cookieOf(slot.fd)) != 0)
      throw OSError(errno, where(op, slot.fd) + ": port_associate");
  } else if (port_dissociate(portFD, PORT_SOURCE_FD, static_cast<std::uintptr_t>(slot.fd)) != 0 &&
             errno != ENOENT && errno != EBADF && errno != EBADFD) {
    throw OSError(errno, where(op, slot.fd) + ": port_dissociate");
  }
  slot.associated = mask;
}

// What the last selectInto delivered goes back to the port with the interest it has now, unless
// that became empty or the key left (see 1). A descriptor closed behind the selector's back
// cannot be associated (EBADF): it leaves the port, as it leaves an epoll set.
template <class T>
void Selector<T>::reassociatePending() {
  for (const SocketHandle fd : pendingFDs) {
    Slot& slot = fds[fd];
    if (!std::exchange(slot.pending, false)) continue;
    try {
      associate(slot, "selectInto");
    } catch (const OSError& e) {
      if (e.code().value() != EBADF) throw;
    }
  }
  pendingFDs.clear();
}

// The signal pipe is associated while any signal is caught (see 6); closing it ended its
// association, and after a delivery it must be associated again.
template <class T>
void Selector<T>::syncSignalPipe() {
  if (!signals.isOpen()) {
    signalFD = -1;
  } else if (signalFD != signals.readFd()) {
    if (port_associate(portFD, PORT_SOURCE_FD, static_cast<std::uintptr_t>(signals.readFd()),
                       POLLIN, nullptr) != 0)
      throw OSError(errno, where("port_associate", signals.readFd()) + ": the signal pipe");
    signalFD = signals.readFd();
  }
}

// A signal or process key to report at the next selectInto (once, however often marked).
template <class T>
void Selector<T>::markDue(SocketHandle fd) {
  if (std::exchange(fds[fd].due, true)) return;
  dueKeys.push_back(fd);
}

// Starts noticing SIGCHLD (see 7), before any child is checked (children.hpp, invariant 3).
template <class T>
void Selector<T>::watchChildren(const std::string& at) {
  if (childrenWatched) return;
  watchSignal(SIGCHLD, at);
  try {
    signals.catchSignal(SIGCHLD, at);
    syncSignalPipe();
  } catch (...) {
    unwatchSignal(SIGCHLD);
    signals.release(SIGCHLD);
    syncSignalPipe();
    throw;
  }
  childrenWatched = true;
}

// Stops noticing SIGCHLD once no child is waited for. Unblocking first lets a SIGCHLD still
// pending reach our handler rather than the disposition restored after it.
template <class T>
void Selector<T>::stopWatchingChildren() noexcept {
  if (!childrenWatched || !children.empty()) return;
  unwatchSignal(SIGCHLD);
  signals.release(SIGCHLD);
  if (!signals.isOpen()) signalFD = -1;
  childrenWatched = false;
}

// Marks due what the signal pipe tells of (see 6 and 7), then gives the pipe back to the port.
template <class T>
void Selector<T>::collectSignals() {
  if (!signals.isOpen()) return;
  signals.drain();
  for (const SocketHandle fd : signalKeys) {
    if (signals.take(fds[fd].param)) markDue(fd);
  }
  if (childrenWatched && signals.take(SIGCHLD)) {
    children.collectExited([this](SocketHandle fd) { markDue(fd); });
    stopWatchingChildren();
  }
  signalFD = -1; // re-associating also drops an event of the pipe still queued
  syncSignalPipe();
}

// port_getn for at least one event and at most capacity, within timeout ms (-1: forever). The
// count is *nget, and after ETIME or EINTR only if list[0] was written (see 3).
template <class T>
int Selector<T>::retrieve(int timeout, int capacity, bool& interrupted) {
  timespec_t ts{};
  uint_t nget = 1;
  events[0].portev_source = 0; // no source has 0
  int rc = 0;
  int error = 0;
  {
    const UnblockedWhileWaiting unblocked(signals); // see 6
    rc = port_getn(portFD, events, static_cast<uint_t>(capacity), &nget, toTimespec(timeout, ts));
    error = rc < 0 ? errno : 0;
  }
  if (rc < 0 && error != ETIME && error != EINTR) throw OSError(error, "selectInto: port_getn");
  interrupted = error == EINTR;
  if (rc < 0 && events[0].portev_source == 0) return 0;
  return static_cast<int>(std::min<uint_t>(nget, static_cast<uint_t>(capacity)));
}

SelectEvent::SelectEvent() {
  openPipe(rfd, wfd, "newSelectEvent");
}

void SelectEvent::trigger() const {
  if (wfd.get() < 0) throw ValueError("trigger: the event is closed");
  const char byte = 1;
  for (;;) {
    if (::write(wfd.get(), &byte, 1) == 1) return;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return; // the pipe is full: triggered already
    throw OSError(errno, where("trigger", wfd.get()));
  }
}

void SelectEvent::close() {
  rfd.reset();
  wfd.reset();
}

template <class T>
Selector<T>::Selector() : portFD(port_create()) {
  if (portFD < 0) throw OSError(errno, "newSelector: port_create");
  if (fcntl(portFD, F_SETFD, FD_CLOEXEC) != 0) { // see 9
    const int error = errno;
    ::close(portFD);
    throw OSError(error, "newSelector: fcntl");
  }
}

template <class T>
Selector<T>::~Selector() {
  for (const Slot& slot : fds) {
    if (slot.fd == InvalidIdent || !selectorOwnsFd(slot.events)) continue;
    if (slot.events.contains(Event::Timer)) timer_delete(slot.timer);
    ::close(slot.fd);
    if (slot.events.contains(Event::Signal)) {
      unwatchSignal(slot.param);
      signals.release(slot.param);
    }
  }
  if (childrenWatched) {
    unwatchSignal(SIGCHLD);
    signals.release(SIGCHLD);
  }
  if (portFD >= 0) ::close(portFD);
}

// See 10. The table is emptied before the keys' data goes, so that a callback's destructor that
// reaches this selector finds it empty.
template <class T>
void Selector<T>::forgetAfterFork() noexcept {
  const std::vector<Slot> inherited = std::exchange(fds, {});
  count = 0;
  pendingFDs.clear();
  dueKeys.clear();
  signalKeys.clear();
  signalFD = -1;
  for (const Slot& slot : inherited) {
    if (slot.fd == InvalidIdent || !selectorOwnsFd(slot.events)) continue;
    ::close(slot.fd);
    if (slot.events.contains(Event::Process)) children.remove(slot.fd);
    if (slot.events.contains(Event::Signal)) {
      unwatchSignal(slot.param);
      signals.release(slot.param);
    }
  }
  if (childrenWatched) {
    childrenWatched = false;
    unwatchSignal(SIGCHLD);
    signals.release(SIGCHLD);
  }
  if (portFD >= 0) ::close(std::exchange(portFD, -1));
}

template <class T>
void Selector<T>::registerHandle(SocketHandle fd, EventSet events, T data) {
  Slot& slot = freeSlot("registerHandle", fd);
  slot.fd = fd;
  slot.data = std::move(data);
  updateHandle(fd, events);
}

template <class T>
void Selector<T>::updateHandle(SocketHandle fd, EventSet events) {
  Slot& slot = checkedKey("updateHandle", fd);
  if (isCustomKey(slot.events))
    throw ValueError(where("updateHandle", fd) + ": a timer, signal, process or event key");
  // A pending slot only changes the interest its re-association will use (see 1).
  const EventSet before = std::exchange(slot.events, events);
  if (!slot.pending) {
    try {
      associate(slot, "updateHandle");
    } catch (...) {
      slot.events = before;
      throw;
    }
  }
  count += (events.empty() ? 0 : 1) - (before.empty() ? 0 : 1);
}

template <class T>
void Selector<T>::unregister(SocketHandle fd) {
  Slot& slot = checkedKey("unregister", fd);
  const EventSet events = slot.events;
  const int param = slot.param;
  if (!slot.pending && slot.associated != 0) {
    slot.events = EventSet{};
    associate(slot, "unregister"); // dissociates
  }
  slot.associated = 0;
  slot.pending = false; // its entry in pendingFDs is skipped
  if (slot.due) std::erase(dueKeys, fd);
  if (!events.empty() && !events.contains(Event::Finished)) --count;
  // The callbacks are destroyed last, once the table no longer holds the key: their destructors
  // may call back into the selector.
  T dropped = std::move(slot.data);
  slot.data = T{};
  slot.fd = InvalidIdent;
  slot.events = EventSet{};
  slot.param = 0;
  slot.due = false;
  // Nim's unregister closes what the selector made: here the timer and the reserved descriptor.
  if (!selectorOwnsFd(events)) return;
  if (events.contains(Event::Timer)) timer_delete(slot.timer);
  ::close(fd);
  if (events.contains(Event::Signal)) {
    std::erase(signalKeys, fd);
    unwatchSignal(param); // first, so that a pending one reaches our handler (see 6)
    signals.release(param);
    syncSignalPipe();
  }
  if (events.contains(Event::Process)) {
    children.remove(fd);
    stopWatchingChildren();
  }
}

template <class T>
SocketHandle Selector<T>::registerTimer(int timeout, bool oneshot, T data) {
  if (timeout <= 0)
    throw ValueError("registerTimer: timeout must be positive, got " + std::to_string(timeout));
  UniqueFd fd = reserveDescriptor("registerTimer");
  Slot& slot = freeSlot("registerTimer", fd.get());
  // The timer reports to the port with the key's portev_user (see 5).
  port_notify_t notify{};
  notify.portnfy_port = portFD;
  notify.portnfy_user = cookieOf(fd.get());
  sigevent sev{};
  sev.sigev_notify = SIGEV_PORT;
  sev.sigev_value.sival_ptr = &notify;
  if (timer_create(CLOCK_MONOTONIC, &sev, &slot.timer) != 0)
    throw OSError(errno, where("registerTimer", fd.get()) + ": timer_create");
  itimerspec spec{};
  spec.it_value.tv_sec = timeout / 1000;
  spec.it_value.tv_nsec = static_cast<long>(timeout % 1000) * 1000000;
  if (!oneshot) spec.it_interval = spec.it_value;
  if (timer_settime(slot.timer, 0, &spec, nullptr) != 0) {
    const int error = errno;
    timer_delete(slot.timer);
    throw OSError(error, where("registerTimer", fd.get()) + ": timer_settime");
  }
  const EventSet events = oneshot ? EventSet{Event::Timer, Event::Oneshot} : Event::Timer;
  addKey(slot, fd.get(), events, std::move(data), 0);
  return fd.release();
}

template <class T>
SocketHandle Selector<T>::registerSignal(int signal, T data) {
  const std::string at = where("registerSignal", "signal", signal);
  checkSignal(signal, at);
  watchSignal(signal, at);
  try {
    signals.catchSignal(signal, at);
    syncSignalPipe();
    UniqueFd fd = reserveDescriptor("registerSignal");
    addKey(freeSlot("registerSignal", fd.get()), fd.get(), Event::Signal, std::move(data), signal);
    signalKeys.push_back(fd.get());
    return fd.release();
  } catch (...) {
    unwatchSignal(signal);
    signals.release(signal);
    syncSignalPipe();
    throw;
  }
}

template <class T>
SocketHandle Selector<T>::registerProcess(int pid, T data) {
  const std::string at = where("registerProcess", "pid", pid);
  if (pid <= 0) throw ValueError(at + ": not a process id");
  requireChild(pid, at);
  watchChildren(at);
  try {
    UniqueFd fd = reserveDescriptor("registerProcess");
    Slot& slot = freeSlot("registerProcess", fd.get());
    const bool waiting = children.add(fd.get(), pid);
    addKey(slot, fd.get(), Event::Process, std::move(data), pid);
    if (!waiting) markDue(fd.get()); // it has exited already
    return fd.release();
  } catch (...) {
    stopWatchingChildren();
    throw;
  }
}

template <class T>
void Selector<T>::registerEvent(SelectEvent& ev, T data) {
  if (ev.getFd() < 0) throw ValueError("registerEvent: the event is closed");
  Slot& slot = freeSlot("registerEvent", ev.getFd());
  addKey(slot, ev.getFd(), Event::User, std::move(data), 0);
  try {
    associate(slot, "registerEvent"); // a trigger made before is in the pipe: reported (see 8)
  } catch (...) {
    unregister(ev.getFd());
    throw;
  }
}

template <class T>
void Selector<T>::unregister(SelectEvent& ev) {
  if (ev.getFd() < 0) throw ValueError("unregister: the event is closed");
  if (!contains(ev.getFd()) || !fds[ev.getFd()].events.contains(Event::User))
    throw ValueError(where("unregister", ev.getFd()) + ": event not registered");
  unregister(ev.getFd());
}

template <class T>
int Selector<T>::selectInto(int timeout, std::span<ReadyKey> results) {
  const int capacity = static_cast<int>(std::min<std::size_t>(results.size(), 64));
  if (capacity == 0) return 0;
  reassociatePending(); // see 1
  // A signal handler that ran during the wait (EINTR) wrote to the pipe: read it now (see 6).
  bool signalled = false;
  const int n = retrieve(dueKeys.empty() ? timeout : 0, capacity, signalled);
  int ready = 0;
  const auto report = [&](Slot& slot, EventSet what, int errorCode) {
    slot.reported = slot.generation;
    results[ready++] = ReadyKey{slot.fd, what, errorCode};
  };
  for (int i = 0; i < n; ++i) {
    const port_event_t& ev = events[i];
    if (ev.portev_user == nullptr) { // the signal pipe, now dissociated
      signalled = true;
      signalFD = -1;
      continue;
    }
    const auto tag = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(ev.portev_user));
    const int fd = static_cast<int>(static_cast<std::uint32_t>(tag));
    // An event of an earlier registration of this number (see 4).
    if (!contains(fd) || static_cast<std::uint32_t>(tag >> 32) != fds[fd].generation) continue;
    Slot& slot = fds[fd];
    const EventSet wanted = slot.events;
    if (ev.portev_source == PORT_SOURCE_TIMER) {
      // A oneshot timer that fired is no longer armed, but is kept as Finished until the loop
      // unregisters it, as in Nim.
      if (wanted.contains(Event::Oneshot)) {
        slot.events.incl(Event::Finished);
        --count;
      }
      report(slot, slot.events, 0);
      continue;
    }
    // The association ended with this event: re-associated at the next selectInto (see 1).
    slot.associated = 0;
    if (!std::exchange(slot.pending, true)) pendingFDs.push_back(fd);
    if (wanted.contains(Event::User)) {
      if (drainPipe(fd)) report(slot, wanted, 0);
      continue;
    }
    EventSet found;
    int errorCode = 0;
    const int mask = ev.portev_events;
    if ((mask & POLLIN) != 0 && wanted.contains(Event::Read)) found.incl(Event::Read);
    if ((mask & POLLOUT) != 0 && wanted.contains(Event::Write)) found.incl(Event::Write);
    if ((mask & (POLLERR | POLLHUP | POLLNVAL)) != 0 && !wanted.empty()) {
      // SO_ERROR is not read here: reading it clears it, and the operation that runs next
      // (connect, recv, send) must see the error itself. A hang-up reads as a reset.
      found.incl(Event::Error);
      errorCode = (mask & POLLNVAL) != 0 ? EBADF : (mask & POLLHUP) != 0 ? ECONNRESET : 0;
    }
    if (!found.empty()) report(slot, found, errorCode);
  }
  if (signalled) collectSignals();
  std::size_t taken = 0;
  for (; taken < dueKeys.size() && ready < capacity; ++taken) {
    Slot& slot = fds[dueKeys[taken]];
    slot.due = false;
    // A process that exited is no longer armed, but is kept as Finished until the loop
    // unregisters it, as in Nim.
    if (slot.events.contains(Event::Process)) {
      slot.events.incl(Event::Finished);
      --count;
    }
    report(slot, slot.events, 0);
  }
  dueKeys.erase(dueKeys.begin(), dueKeys.begin() + static_cast<std::ptrdiff_t>(taken));
  return ready;
}

template <class T>
bool Selector<T>::contains(SocketHandle fd) const {
  return fd >= 0 && static_cast<std::size_t>(fd) < fds.size() && fds[fd].fd != InvalidIdent;
}

template <class T>
T& Selector<T>::getData(SocketHandle fd) {
  return checkedKey("getData", fd).data;
}

template <class T>
bool Selector<T>::isCurrent(const ReadyKey& key) const {
  return contains(key.fd) && fds[key.fd].reported == fds[key.fd].generation;
}

template <class T>
void Selector<T>::dump(std::ostream& os) const {
  os << "  selector: Selector {\n"
     << "    portFD: " << portFD << ",\n"
     << "    events: array[64, port_event_t],\n";
  dumpKeys(os, fds);
}

template class Selector<PData>;
static_assert(SelectorBackend<Selector<PData>>);

} // namespace asyncdispatch
