// Selector over kqueue; the list of what is hard about kqueue opens selector.hpp.
#include "selector.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <utility>

#include "../posix/children.hpp"
#include "../posix/keys.hpp"
#include "../posix/signals.hpp"

namespace asyncdispatch {

namespace {

constexpr unsigned kArmRead = 1;  // the READ knote, or a custom key's one knote
constexpr unsigned kArmWrite = 2; // the WRITE knote
constexpr timespec kNoWait{0, 0};

// udata (see 11): the fd in the low half, the generation in the high half.
constexpr unsigned kHalf = sizeof(std::uintptr_t) * 4;
constexpr std::uintptr_t kLowHalf = (std::uintptr_t{1} << kHalf) - 1;
int fdOf(const void* udata) {
  return static_cast<int>(reinterpret_cast<std::uintptr_t>(udata) & kLowHalf);
}
std::uintptr_t generationOf(const void* udata) {
  return reinterpret_cast<std::uintptr_t>(udata) >> kHalf;
}

#ifdef EVFILT_USER
constexpr short kUserFilter = EVFILT_USER;
#else
constexpr short kUserFilter = EVFILT_READ; // the SelectEvent's pipe (see 10)
#endif

// The filter of a timer, signal, process or event key's one knote.
short filterOf(EventSet events) {
  if (events.contains(Event::Timer)) return EVFILT_TIMER;
  if (events.contains(Event::Signal)) return EVFILT_SIGNAL;
  if (events.contains(Event::Process)) return EVFILT_PROC;
  return kUserFilter;
}

// Applies n <= 2 changes now, each with a receipt, collecting no event (see 2 and 6). Returns
// the first errno, skipping what a delete of a closed or gone ident expects (see 1 and 9).
int applyNow(int kq, struct kevent* list, int n, bool deleting) {
  struct kevent receipts[2];
  for (int i = 0; i < n; ++i)
    list[i].flags |= EV_RECEIPT;
  const int got = kevent(kq, list, n, receipts, n, &kNoWait);
  if (got < 0) return errno == EINTR ? 0 : errno; // EINTR: the changes were applied
  for (int i = 0; i < got; ++i) {
    const int error = (receipts[i].flags & EV_ERROR) != 0 ? static_cast<int>(receipts[i].data) : 0;
    if (error != 0 && !(deleting && (error == EBADF || error == ENOENT || error == ESRCH)))
      return error;
  }
  return 0;
}

#ifndef EVFILT_USER
// Empties a SelectEvent's pipe; false when another dispatcher read it first.
bool drainPipe(int fd) {
  char bytes[64];
  bool any = false;
  for (ssize_t n; (n = ::read(fd, bytes, sizeof bytes)) > 0 || (n < 0 && errno == EINTR);)
    any = any || n > 0;
  return any;
}
#endif

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

template <class T>
void* Selector<T>::tagOf(SocketHandle fd) const {
  const std::uintptr_t generation = fds[fd].generation & kLowHalf;
  return reinterpret_cast<void*>(generation << kHalf | static_cast<std::uintptr_t>(fd));
}

// Queues a READ or WRITE change for the next kevent() (see 2); a full list is flushed first.
template <class T>
void Selector<T>::change(SocketHandle fd, short filter, unsigned short flags) {
  if (nchanges == 64) flushChanges();
  EV_SET(&changes[nchanges++], static_cast<std::uintptr_t>(fd), filter, flags, 0, 0, tagOf(fd));
}

// Applies the queued changes alone, with a receipt each; a failure to report waits in dueReports.
template <class T>
void Selector<T>::flushChanges() {
  for (int i = 0; i < nchanges; ++i)
    changes[i].flags |= EV_RECEIPT;
  const int n = kevent(kqFD, changes, nchanges, events, nchanges, &kNoWait);
  if (n < 0 && errno != EINTR) throw OSError(errno, "kevent (change list)");
  nchanges = 0;
  for (int i = 0; i < n; ++i) {
    if (const int error = changeFailed(events[i]); error != 0)
      dueReports.push_back(
          Due{fdOf(events[i].udata), fds[fdOf(events[i].udata)].generation, error});
  }
}

// A change kevent() answered with EV_ERROR (see 3): 0 when there is nothing to report, else the
// errno to report as an Error of its key. The kernel does not hold what it refused.
template <class T>
int Selector<T>::changeFailed(const struct kevent& ev) {
  const int error = static_cast<int>(ev.data);
  const int fd = fdOf(ev.udata);
  const bool current = contains(fd) && generationOf(ev.udata) == (fds[fd].generation & kLowHalf);
  if (error == 0) return 0; // a receipt
  if (current) fds[fd].armed &= ev.filter == EVFILT_WRITE ? ~kArmWrite : ~kArmRead;
  if (error == EBADF || error == ENOENT) return 0;
  if (!current) throw OSError(error, where("kevent", static_cast<int>(ev.ident)));
  return error;
}

// A timer's, signal's, process's or event's key: a reserved number (see 6) and its knote, added
// now with its udata. It is armed at once and counts until it is Finished or unregistered.
template <class T>
SocketHandle Selector<T>::addReservedKey(const std::string& at, EventSet events, T data, int param,
                                         struct kevent kev) {
  UniqueFd fd = events.contains(Event::User) ? UniqueFd() : reserveDescriptor(at);
  const SocketHandle key =
      events.contains(Event::User) ? static_cast<SocketHandle>(kev.ident) : fd.get();
  Slot& slot = freeSlot(at.c_str(), key);
  if (!events.contains(Event::User) && kev.filter == EVFILT_TIMER)
    kev.ident = static_cast<std::uintptr_t>(key);
  kev.udata = tagOf(key);
  slot.armed = kArmRead;
  if (const int error = applyNow(kqFD, &kev, 1, false);
      error == ESRCH && kev.filter == EVFILT_PROC) {
    dueReports.push_back(Due{key, slot.generation, 0}); // a zombie, on macOS (see 9)
    slot.armed = 0;
  } else if (error != 0) {
    slot.armed = 0;
    throw OSError(error, at + ": kevent");
  }
  slot.fd = key;
  slot.events = events;
  slot.data = std::move(data);
  slot.param = param;
  ++count;
  fd.release();
  return key;
}

// A oneshot timer that fired or a process that exited: the kernel dropped its knote, and it is
// kept as Finished until the loop unregisters it, as in Nim.
template <class T>
void Selector<T>::finish(Slot& slot) {
  slot.armed = 0;
  slot.events.incl(Event::Finished);
  --count;
}

#ifdef EVFILT_USER
SelectEvent::SelectEvent() : number(reserveDescriptor("newSelectEvent")) {}

// To the kq it is registered with; kept while it has none, and sent by registerEvent (see 10).
void SelectEvent::trigger() const {
  if (number.get() < 0) throw ValueError("trigger: the event is closed");
  for (;;) {
    const int target = kq.load();
    if (target < 0) {
      pending.store(true);
      // A registration between the load and the store may have missed it: send it then.
      if (kq.load() < 0 || !pending.exchange(false)) return;
      continue;
    }
    struct kevent kev;
    EV_SET(&kev, static_cast<std::uintptr_t>(number.get()), EVFILT_USER, 0, NOTE_TRIGGER, 0,
           udata.load());
    if (kevent(target, &kev, 1, nullptr, 0, nullptr) == 0) return;
    if (errno == EINTR) continue;
    // Unregistered meanwhile: kept for the next registration, as an eventfd keeps its count.
    if (errno == ENOENT || errno == EBADF) return pending.store(true);
    throw OSError(errno, where("trigger", number.get()));
  }
}

void SelectEvent::close() {
  number.reset();
}
#else
SelectEvent::SelectEvent() {
  openPipe(rfd, wfd, "newSelectEvent");
}

void SelectEvent::trigger() const {
  if (wfd.get() < 0) throw ValueError("trigger: the event is closed");
  const char byte = 1;
  while (::write(wfd.get(), &byte, 1) != 1) {
    if (errno == EAGAIN) return; // the pipe is full: triggered already
    if (errno != EINTR) throw OSError(errno, where("trigger", wfd.get()));
  }
}

void SelectEvent::close() {
  rfd.reset();
  wfd.reset();
}
#endif

template <class T>
Selector<T>::Selector() : kqFD(kqueue()) {
  if (kqFD < 0) throw OSError(errno, "newSelector: kqueue");
  // A kq is not inherited across fork; close-on-exec keeps its number out of an exec'd program.
  if (fcntl(kqFD, F_SETFD, FD_CLOEXEC) != 0) {
    const int error = errno;
    ::close(kqFD);
    throw OSError(error, "newSelector: fcntl");
  }
}

template <class T>
Selector<T>::~Selector() {
  for (const Slot& slot : fds) {
    if (slot.fd == InvalidIdent) continue;
#ifdef EVFILT_USER
    if (slot.event != nullptr) slot.event->kq.store(-1);
#endif
    if (!selectorOwnsFd(slot.events)) continue;
    ::close(slot.fd);
    if (!slot.events.contains(Event::Signal)) continue;
    struct kevent kev;
    EV_SET(&kev, static_cast<std::uintptr_t>(slot.param), EVFILT_SIGNAL, EV_DELETE, 0, 0, nullptr);
    applyNow(kqFD, &kev, 1, true);
    restoreDisposition(slot.param);
    unwatchSignal(slot.param);
  }
  if (kqFD >= 0) ::close(kqFD);
}

// See 12. The table is emptied before the keys' data goes, so that a callback's destructor that
// reaches this selector finds it empty.
template <class T>
void Selector<T>::forgetAfterFork() noexcept {
  const std::vector<Slot> inherited = std::exchange(fds, {});
  count = 0;
  nchanges = 0;
  dueReports.clear();
  kqFD = -1; // not closed: the child has no such kq, and the number may be its own file now
  for (const Slot& slot : inherited) {
    if (slot.fd == InvalidIdent) continue;
#ifdef EVFILT_USER
    if (slot.event != nullptr) slot.event->kq.store(-1);
#endif
    if (!selectorOwnsFd(slot.events)) continue;
    ::close(slot.fd);
    if (!slot.events.contains(Event::Signal)) continue;
    restoreDisposition(slot.param);
    unwatchSignal(slot.param);
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
  // Widen at once; narrow Write at once, Read only when unwanted data shows up (see 4).
  const unsigned wanted = (events.contains(Event::Read) ? kArmRead : 0) |
                          (events.contains(Event::Write) ? kArmWrite : 0);
  const unsigned keep = (slot.armed & kArmRead) | wanted;
  if ((keep & kArmRead) != (slot.armed & kArmRead)) change(fd, EVFILT_READ, EV_ADD);
  if ((keep & kArmWrite) != (slot.armed & kArmWrite))
    change(fd, EVFILT_WRITE, (keep & kArmWrite) != 0 ? EV_ADD : EV_DELETE);
  slot.armed = keep;
  count += (events.empty() ? 0 : 1) - (slot.events.empty() ? 0 : 1);
  slot.events = events;
}

template <class T>
void Selector<T>::unregister(SocketHandle fd) {
  Slot& slot = checkedKey("unregister", fd);
  const EventSet events = slot.events;
  // Its queued changes leave the list, and whatever the kernel may hold is deleted now: a
  // queued delete may stand for a knote that armed no longer shows (see 4).
  unsigned held = slot.armed;
  if (!isCustomKey(events)) {
    const auto mine = [fd](const struct kevent& c) {
      return c.ident == static_cast<std::uintptr_t>(fd);
    };
    for (int i = 0; i < nchanges; ++i) {
      if (mine(changes[i])) held |= changes[i].filter == EVFILT_WRITE ? kArmWrite : kArmRead;
    }
    nchanges = static_cast<int>(std::remove_if(changes, changes + nchanges, mine) - changes);
  }
  struct kevent kevs[2];
  int n = 0;
  const auto ident = static_cast<std::uintptr_t>(
      events.contains(Event::Signal) || events.contains(Event::Process) ? slot.param : fd);
  if (isCustomKey(events)) {
    if (held != 0) EV_SET(&kevs[n++], ident, filterOf(events), EV_DELETE, 0, 0, nullptr);
  } else {
    if ((held & kArmRead) != 0) EV_SET(&kevs[n++], ident, EVFILT_READ, EV_DELETE, 0, 0, nullptr);
    if ((held & kArmWrite) != 0) EV_SET(&kevs[n++], ident, EVFILT_WRITE, EV_DELETE, 0, 0, nullptr);
  }
  const int error = n > 0 ? applyNow(kqFD, kevs, n, true) : 0;
  slot.armed = 0;
  if (!events.empty() && !events.contains(Event::Finished)) --count;
  // The callbacks are destroyed last, once the table no longer holds the key: their destructors
  // may call back into the selector.
  T dropped = std::move(slot.data);
  slot.data = T{};
  slot.fd = InvalidIdent;
  slot.events = EventSet{};
#ifdef EVFILT_USER
  if (slot.event != nullptr) slot.event->kq.store(-1); // its triggers are kept from now (see 10)
#endif
  slot.event = nullptr;
  const int param = std::exchange(slot.param, 0);
  // Nim's unregister closes what the selector made: here the reserved number (see 6).
  if (selectorOwnsFd(events)) ::close(fd);
  if (events.contains(Event::Signal)) {
    restoreDisposition(param); // after the delete: nothing is recorded once it runs (see 8)
    unwatchSignal(param);
  }
  if (error != 0) throw OSError(error, where("unregister", fd) + ": kevent");
}

template <class T>
SocketHandle Selector<T>::registerTimer(int timeout, bool oneshot, T data) {
  if (timeout <= 0)
    throw ValueError("registerTimer: timeout must be positive, got " + std::to_string(timeout));
  const EventSet events = oneshot ? EventSet{Event::Timer, Event::Oneshot} : Event::Timer;
  struct kevent kev; // the ident is the reserved number; milliseconds are the default unit
  EV_SET(&kev, 0, EVFILT_TIMER, EV_ADD | (oneshot ? EV_ONESHOT : 0), 0, timeout, nullptr);
  return addReservedKey("registerTimer", events, std::move(data), 0, kev);
}

template <class T>
SocketHandle Selector<T>::registerSignal(int signal, T data) {
  const std::string at = where("registerSignal", "signal", signal);
  checkSignal(signal, at);
  watchSignal(signal, at, false); // the thread's table only: kqueue needs no mask (see 8)
  try {
    struct kevent kev;
    EV_SET(&kev, static_cast<std::uintptr_t>(signal), EVFILT_SIGNAL, EV_ADD, 0, 0, nullptr);
    const SocketHandle fd = addReservedKey(at, Event::Signal, std::move(data), signal, kev);
    ignoreWhileWatched(signal);
    return fd;
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
  struct kevent kev;
  EV_SET(&kev, static_cast<std::uintptr_t>(pid), EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, nullptr);
  return addReservedKey(at, Event::Process, std::move(data), pid, kev);
}

template <class T>
void Selector<T>::registerEvent(SelectEvent& ev, T data) {
  if (ev.getFd() < 0) throw ValueError("registerEvent: the event is closed");
  struct kevent kev;
#ifdef EVFILT_USER
  if (ev.kq.load() >= 0)
    throw ValueError(where("registerEvent", ev.getFd()) + ": already registered with a selector");
  EV_SET(&kev, static_cast<std::uintptr_t>(ev.getFd()), EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0,
         nullptr);
#else
  EV_SET(&kev, static_cast<std::uintptr_t>(ev.getFd()), EVFILT_READ, EV_ADD, 0, 0, nullptr);
#endif
  addReservedKey("registerEvent", Event::User, std::move(data), 0, kev);
  fds[ev.getFd()].event = &ev;
#ifdef EVFILT_USER
  ev.udata.store(tagOf(ev.getFd()));
  ev.kq.store(kqFD);
  if (ev.pending.exchange(false)) ev.trigger(); // a trigger from before is not lost (see 10)
#endif
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
  int ready = 0;
  // One report per key and pass: a READ and a WRITE event of one descriptor are merged.
  const auto report = [&](Slot& slot, EventSet got, int errorCode) {
    for (int i = 0; i < ready; ++i) {
      if (results[i].fd != slot.fd) continue;
      for (const Event e : {Event::Read, Event::Write, Event::Error}) {
        if (got.contains(e)) results[i].events.incl(e);
      }
      if (errorCode != 0) results[i].errorCode = errorCode;
      return;
    }
    slot.reported = slot.generation;
    results[ready++] = ReadyKey{slot.fd, got, errorCode};
  };
  // What is owed from before the wait: a process gone before its knote, a failed flush.
  while (!dueReports.empty() && ready < capacity) {
    const Due due = dueReports.front();
    dueReports.erase(dueReports.begin());
    if (!contains(due.fd) || fds[due.fd].generation != due.generation) continue;
    Slot& slot = fds[due.fd];
    if (due.errorCode != 0) {
      report(slot, Event::Error, due.errorCode);
    } else {
      finish(slot);
      report(slot, slot.events, 0);
    }
  }
  const int room = capacity - ready;
  if (room == 0) return ready;
  if (nchanges > room) flushChanges(); // its errors must fit the event list (see 2)
  timespec wait{timeout / 1000, static_cast<long>(timeout % 1000) * 1000000L};
  const bool forever = timeout < 0 && ready == 0;
  if (ready > 0 || timeout < 0) wait = kNoWait;
  const int n = kevent(kqFD, changes, nchanges, events, room, forever ? nullptr : &wait);
  if (n < 0 && errno != EINTR) throw OSError(errno, "selectInto: kevent");
  nchanges = 0; // applied, even when a signal interrupted the wait
  for (int i = 0; i < n; ++i) {
    const struct kevent& ev = events[i];
    const int fd = fdOf(ev.udata);
    if ((ev.flags & EV_ERROR) != 0) {
      if (const int error = changeFailed(ev); error != 0) report(fds[fd], Event::Error, error);
      continue;
    }
    // An event of an earlier registration of this number, still in the kernel (see 11).
    if (!contains(fd) || generationOf(ev.udata) != (fds[fd].generation & kLowHalf)) continue;
    Slot& slot = fds[fd];
    const EventSet wanted = slot.events;
    if (isCustomKey(wanted)) {
#ifndef EVFILT_USER
      if (wanted.contains(Event::User) && !drainPipe(fd)) continue;
#endif
      if (wanted.contains(Event::Oneshot) || wanted.contains(Event::Process)) finish(slot);
      report(slot, slot.events, 0);
      continue;
    }
    const bool isRead = ev.filter == EVFILT_READ;
    const Event kind = isRead ? Event::Read : Event::Write;
    EventSet got;
    int errorCode = 0;
    if (wanted.contains(kind)) got.incl(kind);
    // End of stream or an error (see 5): fflags is the socket error, 0 for a clean FIN, which
    // alone is news only to a reader.
    if ((ev.flags & EV_EOF) != 0 && !wanted.empty() && (wanted.contains(kind) || ev.fflags != 0)) {
      got.incl(Event::Error);
      errorCode = static_cast<int>(ev.fflags);
    }
    // The kernel reported something nobody waits for any more: now narrow its interest.
    const unsigned bit = isRead ? kArmRead : kArmWrite;
    if (!wanted.contains(kind) && (slot.armed & bit) != 0) {
      change(fd, ev.filter, EV_DELETE);
      slot.armed &= ~bit;
    }
    if (!got.empty()) report(slot, got, errorCode);
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
     << "    kqFD: " << kqFD << ",\n"
     << "    events: array[64, kevent],\n";
  dumpKeys(os, fds);
}

template class Selector<PData>;
static_assert(SelectorBackend<Selector<PData>>);

} // namespace asyncdispatch
