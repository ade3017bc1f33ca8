// Selector over epoll; the list of what is hard about epoll opens selector.hpp.
#include "selector.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <utility>

#include "../posix/signals.hpp"
#include "../posix/keys.hpp"
#include "kernel_objects.hpp"

namespace asyncdispatch {

namespace {

std::uint32_t toEpollEvents(EventSet events) {
  std::uint32_t mask = 0;
  if (events.contains(Event::Read)) mask |= EPOLLIN;
  if (events.contains(Event::Write)) mask |= EPOLLOUT;
  return mask;
}

// tag comes back with each event of fd: fd and its generation (see 10), or fd alone.
void control(int epollFD, int op, int fd, std::uint32_t mask, std::uint64_t tag, const char* name) {
  epoll_event ev{};
  ev.events = mask;
  ev.data.u64 = tag;
  if (epoll_ctl(epollFD, op, fd, &ev) != 0) throw OSError(errno, where(name, fd));
}

} // namespace

template <class T>
typename Selector<T>::Slot& Selector<T>::checkedKey(const char* op, SocketHandle fd) {
  if (!contains(fd)) throw ValueError(where(op, fd) + ": descriptor not registered");
  return fds[fd];
}

// The descriptor in the low 32 bits, its registration's generation in the high 32.
template <class T>
std::uint64_t Selector<T>::tagOf(SocketHandle fd) const {
  return static_cast<std::uint64_t>(fds[fd].generation) << 32 | static_cast<std::uint32_t>(fd);
}

// The slot of fd, which must be free, for a new registration: with a new generation (see 10).
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

// Registers a kernel object made for a timer, signal, process or event key; it is armed (read
// interest) at once and counts until it is Finished or unregistered.
template <class T>
void Selector<T>::addKernelObject(const char* op, int fd, EventSet events, T data, int param) {
  Slot& slot = freeSlot(op, fd);
  control(epollFD, EPOLL_CTL_ADD, fd, EPOLLIN, tagOf(fd), op);
  slot.fd = fd;
  slot.events = events;
  slot.data = std::move(data);
  slot.armed = EPOLLIN;
  slot.param = param;
  ++count;
}

// Opens the SIGCHLD fallback's signalfd unless it is open (see 8); SIGCHLD is blocked first.
template <class T>
void Selector<T>::watchChildren(const std::string& at) {
  if (sigchldFD >= 0) return;
  UniqueFd fd = openSignalFd(SIGCHLD, at);
  try {
    control(epollFD, EPOLL_CTL_ADD, fd.get(), EPOLLIN, static_cast<std::uint32_t>(fd.get()),
            "registerProcess");
  } catch (...) {
    unwatchSignal(SIGCHLD);
    throw;
  }
  sigchldFD = fd.release();
}

template <class T>
void Selector<T>::stopWatchingChildren() noexcept {
  if (sigchldFD < 0 || !children.empty()) return;
  epoll_event ev{};
  epoll_ctl(epollFD, EPOLL_CTL_DEL, sigchldFD, &ev);
  ::close(std::exchange(sigchldFD, -1));
  unwatchSignal(SIGCHLD);
}

SelectEvent::SelectEvent() : efd(openEventFd("newSelectEvent").release()) {}

SelectEvent::~SelectEvent() {
  close();
}

void SelectEvent::trigger() const {
  if (efd < 0) throw ValueError("trigger: the event is closed");
  writeCounter(efd, "trigger");
}

void SelectEvent::close() {
  if (efd >= 0) ::close(std::exchange(efd, -1));
}

template <class T>
Selector<T>::Selector() : epollFD(epoll_create1(EPOLL_CLOEXEC)) {
  if (epollFD < 0) throw OSError(errno, "newSelector: epoll_create1");
}

template <class T>
Selector<T>::~Selector() {
  for (const Slot& slot : fds) {
    if (slot.fd == InvalidIdent || !selectorOwnsFd(slot.events)) continue;
    ::close(slot.fd);
    if (slot.events.contains(Event::Signal)) unwatchSignal(slot.param);
    if (slot.events.contains(Event::Process)) children.remove(slot.fd);
  }
  stopWatchingChildren();
  if (epollFD >= 0) ::close(epollFD);
}

// See 11: the table is emptied before the keys' data goes, so that a callback's destructor that
// reaches this selector finds it empty.
template <class T>
void Selector<T>::forgetAfterFork() noexcept {
  const std::vector<Slot> inherited = std::exchange(fds, {});
  count = 0;
  for (const Slot& slot : inherited) {
    if (slot.fd == InvalidIdent || !selectorOwnsFd(slot.events)) continue;
    ::close(slot.fd);
    if (slot.events.contains(Event::Signal)) unwatchSignal(slot.param);
    if (slot.events.contains(Event::Process)) children.remove(slot.fd);
  }
  if (sigchldFD >= 0) {
    ::close(std::exchange(sigchldFD, -1));
    unwatchSignal(SIGCHLD);
  }
  if (epollFD >= 0) ::close(std::exchange(epollFD, -1));
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
  // Widen at once; narrow Write at once, Read only when unwanted data shows up (see 5).
  const std::uint32_t keep = (slot.armed & EPOLLIN) | toEpollEvents(events);
  if (keep != slot.armed) {
    const int op = keep == 0 ? EPOLL_CTL_DEL : slot.armed == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    control(epollFD, op, fd, keep, tagOf(fd), "updateHandle");
    slot.armed = keep;
  }
  count += (events.empty() ? 0 : 1) - (slot.events.empty() ? 0 : 1);
  slot.events = events;
}

template <class T>
void Selector<T>::unregister(SocketHandle fd) {
  Slot& slot = checkedKey("unregister", fd);
  const EventSet events = slot.events;
  if (slot.armed != 0) {
    // A descriptor closed behind our back has already left the epoll set (EBADF, ENOENT).
    epoll_event ev{};
    if (epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, &ev) != 0 && errno != EBADF && errno != ENOENT)
      throw OSError(errno, where("unregister", fd));
    slot.armed = 0;
  }
  if (!events.empty() && !events.contains(Event::Finished)) --count;
  // The callbacks are destroyed last, once the table no longer holds the key: their destructors
  // may call back into the selector.
  T dropped = std::move(slot.data);
  slot.data = T{};
  slot.fd = InvalidIdent;
  slot.events = EventSet{};
  const int param = std::exchange(slot.param, 0);
  // Nim's unregister closes the kernel objects the selector made; an event's is its own.
  if (!selectorOwnsFd(events)) return;
  ::close(fd);
  if (events.contains(Event::Signal)) unwatchSignal(param);
  if (events.contains(Event::Process)) {
    children.remove(fd);
    stopWatchingChildren();
  }
}

template <class T>
SocketHandle Selector<T>::registerTimer(int timeout, bool oneshot, T data) {
  UniqueFd fd = openTimerFd(timeout, oneshot);
  const EventSet events = oneshot ? EventSet{Event::Timer, Event::Oneshot} : Event::Timer;
  addKernelObject("registerTimer", fd.get(), events, std::move(data), 0);
  return fd.release();
}

template <class T>
SocketHandle Selector<T>::registerSignal(int signal, T data) {
  const std::string at = where("registerSignal", "signal", signal);
  checkSignal(signal, at);
  UniqueFd fd = openSignalFd(signal, at);
  try {
    addKernelObject("registerSignal", fd.get(), Event::Signal, std::move(data), signal);
    return fd.release();
  } catch (...) {
    unwatchSignal(signal);
    throw;
  }
}

template <class T>
SocketHandle Selector<T>::registerProcess(int pid, T data) {
  const std::string at = where("registerProcess", "pid", pid);
  if (pid <= 0) throw ValueError(at + ": not a process id");
  requireChild(pid, at);
  if (UniqueFd fd = openPidFd(pid, at); fd.get() >= 0) {
    addKernelObject("registerProcess", fd.get(), Event::Process, std::move(data), pid);
    return fd.release();
  }
  // The SIGCHLD fallback (see 8): an eventfd, written once the child is found exited.
  UniqueFd fd = openEventFd(at);
  watchChildren(at);
  try {
    if (!children.add(fd.get(), pid)) writeCounter(fd.get(), "registerProcess");
    addKernelObject("registerProcess", fd.get(), Event::Process, std::move(data), pid);
  } catch (...) {
    children.remove(fd.get());
    stopWatchingChildren();
    throw;
  }
  return fd.release();
}

template <class T>
void Selector<T>::registerEvent(SelectEvent& ev, T data) {
  if (ev.efd < 0) throw ValueError("registerEvent: the event is closed");
  addKernelObject("registerEvent", ev.efd, Event::User, std::move(data), 0);
}

template <class T>
void Selector<T>::unregister(SelectEvent& ev) {
  if (ev.efd < 0) throw ValueError("unregister: the event is closed");
  if (!contains(ev.efd) || !fds[ev.efd].events.contains(Event::User))
    throw ValueError(where("unregister", ev.efd) + ": event not registered");
  unregister(ev.efd);
}

template <class T>
int Selector<T>::selectInto(int timeout, std::span<ReadyKey> results) {
  const int capacity = static_cast<int>(std::min<std::size_t>(results.size(), 64));
  const int n = epoll_wait(epollFD, events, capacity, timeout);
  if (n < 0) {
    if (errno == EINTR) return 0;
    throw OSError(errno, "selectInto: epoll_wait");
  }
  int ready = 0;
  for (int i = 0; i < n; ++i) {
    const int fd = static_cast<int>(static_cast<std::uint32_t>(events[i].data.u64));
    const auto generation = static_cast<std::uint32_t>(events[i].data.u64 >> 32);
    const std::uint32_t mask = events[i].events;
    if (fd == sigchldFD) {
      // One SIGCHLD may stand for several children; their keys' eventfds report them.
      drainSignals(sigchldFD);
      children.collectExited([](SocketHandle key) { writeCounter(key, "selectInto"); });
      stopWatchingChildren();
      continue;
    }
    // An event of an earlier registration of this number, still in the kernel (see 10).
    if (!contains(fd) || generation != fds[fd].generation) continue;
    Slot& slot = fds[fd];
    slot.reported = generation;
    const EventSet wanted = slot.events;
    if (isCustomKey(wanted)) {
      // Consume what the kernel queued, or the key is reported again for the same expiry,
      // signal or trigger; a pidfd stays readable, but its key is finished at once.
      if (wanted.contains(Event::Timer) || wanted.contains(Event::User)) {
        if (!readCounter(fd)) continue;
      } else if (wanted.contains(Event::Signal)) {
        if (!drainSignals(fd)) continue;
      }
      // A oneshot timer that fired or a process that exited leaves the epoll set and is no
      // longer armed, but is kept as Finished until the loop unregisters it, as in Nim.
      if (wanted.contains(Event::Oneshot) || wanted.contains(Event::Process)) {
        control(epollFD, EPOLL_CTL_DEL, fd, 0, 0, "selectInto");
        slot.armed = 0;
        slot.events.incl(Event::Finished);
        --count;
      }
      results[ready++] = ReadyKey{fd, slot.events, 0};
      continue;
    }
    ReadyKey rk{fd, {}, 0};
    if ((mask & EPOLLIN) != 0 && wanted.contains(Event::Read)) rk.events.incl(Event::Read);
    if ((mask & EPOLLOUT) != 0 && wanted.contains(Event::Write)) rk.events.incl(Event::Write);
    if ((mask & (EPOLLERR | EPOLLHUP)) != 0 && !wanted.empty()) {
      // SO_ERROR is not read here: reading it clears it, and the operation that runs next
      // (connect, recv, send) must see the error itself. A hang-up reads as a reset.
      rk.events.incl(Event::Error);
      rk.errorCode = (mask & EPOLLHUP) != 0 ? ECONNRESET : 0;
    }
    // The kernel reported something nobody waits for any more: now narrow its interest.
    const std::uint32_t narrowed = toEpollEvents(wanted);
    if ((mask & ~narrowed & (EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0 &&
        slot.armed != narrowed) {
      control(epollFD, narrowed == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD, fd, narrowed, tagOf(fd),
              "selectInto");
      slot.armed = narrowed;
    }
    if (!rk.events.empty()) results[ready++] = rk;
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
     << "    epollFD: " << epollFD << ",\n"
     << "    events: array[64, epoll_event],\n";
  dumpKeys(os, fds);
}

template class Selector<PData>;
static_assert(SelectorBackend<Selector<PData>>);

} // namespace asyncdispatch
