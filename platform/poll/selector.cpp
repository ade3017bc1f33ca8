// Selector over poll(2); the list of what is hard about poll(2) opens selector.hpp. Only POSIX
// interfaces are used here, so that any POSIX system without a native backend can build it.
#include "selector.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <utility>

#include "../posix/keys.hpp"

namespace asyncdispatch {

namespace {

short toPollEvents(EventSet events) {
  short mask = 0;
  if (events.contains(Event::Read)) mask |= POLLIN;
  if (events.contains(Event::Write)) mask |= POLLOUT;
  return mask;
}

} // namespace

template <class T>
typename Selector<T>::Slot& Selector<T>::checkedKey(const char* op, SocketHandle fd) {
  if (!contains(fd)) throw ValueError(where(op, fd) + ": descriptor not registered");
  return fds[fd];
}

// The slot of fd, which must be free, for a new registration: with a new generation (see 11).
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

// A timer's, signal's or process's key, named by a descriptor reserved for it (see 8). It is
// armed at once and counts until it is Finished or unregistered.
template <class T>
SocketHandle Selector<T>::addReservedKey(const char* op, EventSet events, T data, int param) {
  UniqueFd fd = reserveDescriptor(op);
  Slot& slot = freeSlot(op, fd.get());
  slot.fd = fd.get();
  slot.events = events;
  slot.data = std::move(data);
  slot.param = param;
  ++count;
  return fd.release();
}

// Nim's pollAdd: a new entry at the end of pollFDs.
template <class T>
void Selector<T>::pollAdd(int fd, short events) {
  pollfd entry{};
  entry.fd = fd;
  entry.events = events;
  pollFDs.push_back(entry);
}

// Nim's pollUpdate: a key's entry follows its events (see 1 and 2): added when something is
// armed, edited in place when that changes, removed when nothing is.
template <class T>
void Selector<T>::pollUpdate(Slot& slot) {
  const short wanted = slot.events.contains(Event::User) ? POLLIN : toPollEvents(slot.events);
  if (wanted == 0) {
    if (slot.pollIndex >= 0) pollRemove(slot.pollIndex);
  } else if (slot.pollIndex < 0) {
    slot.pollIndex = static_cast<int>(pollFDs.size());
    pollAdd(slot.fd, wanted);
  } else {
    pollFDs[slot.pollIndex].events = wanted;
  }
}

// The field that holds the index of pollFDs[index]: its key's pollIndex, or signalIndex. An entry
// silenced after POLLNVAL holds ~fd, which poll(2) ignores as any negative fd (see 2).
template <class T>
int& Selector<T>::ownerIndex(int index) {
  if (index == signalIndex) return signalIndex;
  const int fd = pollFDs[index].fd;
  return fds[fd < 0 ? ~fd : fd].pollIndex;
}

// Nim's pollRemove: the last entry moves into the freed place, so a removal costs O(1).
template <class T>
void Selector<T>::pollRemove(int index) {
  const int last = static_cast<int>(pollFDs.size()) - 1;
  int& moved = ownerIndex(last);
  ownerIndex(index) = -1;
  if (index != last) {
    pollFDs[index] = pollFDs[last];
    moved = index;
  }
  pollFDs.pop_back();
}

// The signal pipe is in pollFDs while any signal is caught (see 6).
template <class T>
void Selector<T>::syncSignalPipe() {
  if (signals.isOpen() && signalIndex < 0) {
    signalIndex = static_cast<int>(pollFDs.size());
    pollAdd(signals.readFd(), POLLIN);
  } else if (!signals.isOpen() && signalIndex >= 0) {
    pollRemove(signalIndex);
  }
}

// A timer, signal or process key to report at the next selectInto (once, however often marked).
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
  syncSignalPipe();
  childrenWatched = false;
}

// The wait, shrunk to the nearest timer and rounded up, so that no timer fires early (see 5).
template <class T>
int Selector<T>::timeoutWithTimers(int timeout) const {
  if (timeout == 0) return 0;
  const Clock::time_point now = Clock::now();
  for (const TimerKey& timer : timerKeys) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(timer.deadline - now).count();
    const int ms = left <= 0 ? 0 : static_cast<int>(std::min<decltype(left)>(left, INT_MAX));
    if (timeout < 0 || ms < timeout) timeout = ms;
  }
  return timeout;
}

// Marks due what the wait brought: the signals and child exits the signal pipe tells of (see 6
// and 7), and the timers whose deadline has passed (see 5). After EINTR no revents is valid,
// but a handler has run, so the pipe is read anyway.
template <class T>
void Selector<T>::collectDue(bool interrupted) {
  if (signalIndex >= 0 && (interrupted || pollFDs[signalIndex].revents != 0)) {
    signals.drain();
    for (const SocketHandle fd : signalKeys) {
      if (signals.take(fds[fd].param)) markDue(fd);
    }
    if (childrenWatched && signals.take(SIGCHLD)) {
      children.collectExited([this](SocketHandle fd) { markDue(fd); });
      stopWatchingChildren();
    }
  }
  if (timerKeys.empty()) return;
  const Clock::time_point now = Clock::now();
  std::erase_if(timerKeys, [&](TimerKey& timer) {
    if (timer.deadline > now) return false;
    markDue(timer.fd);
    if (timer.period == Clock::duration::zero()) return true; // a oneshot fires once
    // A periodic timer late by several periods fires once, as a timerfd's counter reads once.
    timer.deadline += timer.period * ((now - timer.deadline) / timer.period + 1);
    return false;
  });
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
Selector<T>::Selector() = default;

template <class T>
Selector<T>::~Selector() {
  forgetAfterFork();
}

// See 12. The table is emptied before the keys' data goes, so that a callback's destructor that
// reaches this selector finds it empty.
template <class T>
void Selector<T>::forgetAfterFork() noexcept {
  const std::vector<Slot> inherited = std::exchange(fds, {});
  count = 0;
  pollFDs.clear();
  timerKeys.clear();
  dueKeys.clear();
  signalKeys.clear();
  signalIndex = -1;
  scanFrom = 0;
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
  count += (events.empty() ? 0 : 1) - (slot.events.empty() ? 0 : 1);
  slot.events = events;
  pollUpdate(slot);
}

template <class T>
void Selector<T>::unregister(SocketHandle fd) {
  Slot& slot = checkedKey("unregister", fd);
  const EventSet events = slot.events;
  const int param = slot.param;
  if (slot.pollIndex >= 0) pollRemove(slot.pollIndex);
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
  // Nim's unregister closes what the selector made: here the reserved descriptor (see 8).
  if (!selectorOwnsFd(events)) return;
  ::close(fd);
  if (events.contains(Event::Timer))
    std::erase_if(timerKeys, [fd](const TimerKey& timer) { return timer.fd == fd; });
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
  const EventSet events = oneshot ? EventSet{Event::Timer, Event::Oneshot} : Event::Timer;
  const SocketHandle fd = addReservedKey("registerTimer", events, std::move(data), 0);
  const std::chrono::milliseconds period(timeout);
  timerKeys.push_back(TimerKey{Clock::now() + period, oneshot ? Clock::duration{} : period, fd});
  return fd;
}

template <class T>
SocketHandle Selector<T>::registerSignal(int signal, T data) {
  const std::string at = where("registerSignal", "signal", signal);
  checkSignal(signal, at);
  watchSignal(signal, at);
  try {
    signals.catchSignal(signal, at);
    syncSignalPipe();
    const SocketHandle fd =
        addReservedKey("registerSignal", Event::Signal, std::move(data), signal);
    signalKeys.push_back(fd);
    return fd;
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
    const SocketHandle fd = addReservedKey("registerProcess", Event::Process, std::move(data), pid);
    if (!children.add(fd, pid)) markDue(fd); // it has exited already
    return fd;
  } catch (...) {
    stopWatchingChildren();
    throw;
  }
}

template <class T>
void Selector<T>::registerEvent(SelectEvent& ev, T data) {
  if (ev.getFd() < 0) throw ValueError("registerEvent: the event is closed");
  Slot& slot = freeSlot("registerEvent", ev.getFd());
  slot.fd = ev.getFd();
  slot.events = Event::User;
  slot.data = std::move(data);
  ++count;
  pollUpdate(slot);
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
  int n = 0;
  int error = 0;
  {
    const UnblockedWhileWaiting unblocked(signals); // see 6
    n = ::poll(pollFDs.data(), static_cast<nfds_t>(pollFDs.size()),
               dueKeys.empty() ? timeoutWithTimers(timeout) : 0);
    error = n < 0 ? errno : 0;
  }
  if (n < 0 && error != EINTR) throw OSError(error, "selectInto: poll");
  collectDue(n < 0);
  int ready = 0;
  const auto report = [&](Slot& slot, EventSet events, int errorCode) {
    slot.reported = slot.generation;
    results[ready++] = ReadyKey{slot.fd, events, errorCode};
  };
  std::size_t reported = 0;
  for (; reported < dueKeys.size() && ready < capacity; ++reported) {
    Slot& slot = fds[dueKeys[reported]];
    slot.due = false;
    // A oneshot timer that fired or a process that exited is no longer armed, but is kept as
    // Finished until the loop unregisters it, as in Nim.
    if (slot.events.contains(Event::Oneshot) || slot.events.contains(Event::Process)) {
      slot.events.incl(Event::Finished);
      --count;
    }
    report(slot, slot.events, 0);
  }
  dueKeys.erase(dueKeys.begin(), dueKeys.begin() + static_cast<std::ptrdiff_t>(reported));
  const std::size_t size = pollFDs.size();
  for (std::size_t k = 0; n > 0 && k < size && ready < capacity; ++k) {
    const std::size_t i = (scanFrom + k) % size;
    pollfd& entry = pollFDs[i];
    if (entry.revents == 0 || entry.fd < 0 || static_cast<int>(i) == signalIndex) continue;
    if (ready + 1 == capacity) scanFrom = i + 1; // the next call starts after it (see 10)
    const int fd = entry.fd;
    const short revents = entry.revents;
    Slot& slot = fds[fd];
    // Closed behind our back: reported once, then silenced until unregistered (see 2).
    if ((revents & POLLNVAL) != 0) entry.fd = ~fd;
    if (slot.events.contains(Event::User)) {
      if ((revents & POLLNVAL) == 0 && drainPipe(fd)) report(slot, slot.events, 0);
      continue;
    }
    EventSet events;
    if ((revents & POLLIN) != 0 && slot.events.contains(Event::Read)) events.incl(Event::Read);
    if ((revents & POLLOUT) != 0 && slot.events.contains(Event::Write)) events.incl(Event::Write);
    // SO_ERROR is not read here: reading it clears it, and the operation that runs next
    // (connect, recv, send) must see the error itself. A hang-up reads as a reset.
    int errorCode = 0;
    if ((revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) events.incl(Event::Error);
    if ((revents & POLLHUP) != 0) errorCode = ECONNRESET;
    if ((revents & POLLNVAL) != 0) errorCode = EBADF;
    if (!events.empty()) report(slot, events, errorCode);
  }
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
     << "    pollFDs: array[" << pollFDs.size() << ", pollfd],\n";
  dumpKeys(os, fds);
}

template class Selector<PData>;
static_assert(SelectorBackend<Selector<PData>>);

} // namespace asyncdispatch
