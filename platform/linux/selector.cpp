// Selector over epoll; the list of what is hard about epoll opens selector.hpp.
#include "selector.hpp"

#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>

#include "../../include/asyncdispatch/errors.hpp"

namespace asyncdispatch {

namespace {

std::string where(const char* op, SocketHandle fd) {
  return std::string(op) + "(fd " + std::to_string(fd) + ")";
}

// "registerSignal(signal 10)", "registerProcess(pid 4242)": errors name the value they refuse.
std::string where(const char* op, const char* what, int value) {
  return std::string(op) + "(" + what + " " + std::to_string(value) + ")";
}

std::uint32_t toEpollEvents(EventSet events) {
  std::uint32_t mask = 0;
  if (events.contains(Event::Read)) mask |= EPOLLIN;
  if (events.contains(Event::Write)) mask |= EPOLLOUT;
  return mask;
}

// tag is what the kernel hands back with each event of fd: the descriptor and the generation
// of its registration (see 11), or the bare descriptor for the SIGCHLD fallback's signalfd.
void control(int epollFD, int op, int fd, std::uint32_t mask, std::uint64_t tag, const char* name) {
  epoll_event ev{};
  ev.events = mask;
  ev.data.u64 = tag;
  if (epoll_ctl(epollFD, op, fd, &ev) != 0) throw OSError(errno, where(name, fd));
}

// Owns a kernel object made for a key until release(): closed on every path that does not end
// with the object in the table.
class UniqueFd {
public:
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }

private:
  int fd_;
};

// Keys whose kernel object the selector made (timerfd, signalfd, pidfd or the fallback's
// eventfd), so unregister closes it; a User key's eventfd belongs to its SelectEvent.
bool ownsKernelObject(EventSet events) {
  return events.contains(Event::Timer) || events.contains(Event::Signal) ||
         events.contains(Event::Process);
}

bool isKernelObject(EventSet events) {
  return ownsKernelObject(events) || events.contains(Event::User);
}

// Reads an eventfd's or a timerfd's 8-byte counter, which resets it (see 7 and 10). False when
// it was already zero: another dispatcher watching the same event read it first.
bool readCounter(int fd) {
  std::uint64_t value = 0;
  for (;;) {
    if (::read(fd, &value, sizeof value) == sizeof value) return true;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return false;
    throw OSError(errno, where("selectInto", fd));
  }
}

// Adds one to an eventfd's counter. EAGAIN means the counter is at its maximum, which is
// triggered already.
void writeCounter(int fd, const char* op) {
  const std::uint64_t one = 1;
  for (;;) {
    if (::write(fd, &one, sizeof one) == sizeof one) return;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return;
    throw OSError(errno, where(op, fd));
  }
}

// Reads every signal queued on a signalfd (standard signals coalesce, real-time ones queue; see
// 8). False when there was none.
bool drainSignals(int fd) {
  std::array<signalfd_siginfo, 16> infos;
  bool any = false;
  for (;;) {
    const ssize_t n = ::read(fd, infos.data(), sizeof infos);
    if (n > 0) {
      any = true;
      if (static_cast<std::size_t>(n) < sizeof infos) return true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) throw OSError(errno, where("selectInto", fd));
    return any;
  }
}

// The signals a thread watches, and whether each was blocked before (see 8). The mask is per
// thread, so this table is too.
struct SignalWatch {
  bool watched = false;
  bool blockedBefore = false;
};
constexpr int kSignalCount = NSIG; // 65 on Linux: signals 1 to 64
thread_local std::array<SignalWatch, kSignalCount> signalWatches;

// The kernel's first real-time signal; glibc keeps it and the next for its threads and starts
// SIGRTMIN above them (see 8).
constexpr int kKernelRtMin = 32;

void checkSignal(int signal, const std::string& at) {
  if (signal < 1 || signal >= kSignalCount)
    throw ValueError(at + ": not a signal number (1 to " + std::to_string(kSignalCount - 1) + ")");
  if (signal == SIGKILL || signal == SIGSTOP)
    throw ValueError(at + ": SIGKILL and SIGSTOP cannot be caught");
  if (signal >= kKernelRtMin && signal < SIGRTMIN)
    throw ValueError(at + ": reserved by the C library for its threads");
}

// Blocks signal in this thread, remembering whether it was blocked already. A second watcher
// would race the first for each delivery, so it is refused.
void watchSignal(int signal, const std::string& at) {
  SignalWatch& watch = signalWatches[signal];
  if (watch.watched) throw ValueError(at + ": this thread already watches that signal");
  sigset_t set;
  sigset_t old;
  sigemptyset(&set);
  sigaddset(&set, signal);
  if (const int error = pthread_sigmask(SIG_BLOCK, &set, &old); error != 0)
    throw OSError(error, at + ": pthread_sigmask");
  watch = SignalWatch{true, sigismember(&old, signal) == 1};
}

// Puts signal's mask bit back as it was before watchSignal.
void unwatchSignal(int signal) noexcept {
  SignalWatch& watch = signalWatches[signal];
  if (!watch.watched) return;
  if (!watch.blockedBefore) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signal);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  }
  watch = SignalWatch{};
}

// ASYNCDISPATCH_NO_PIDFD=1 forces the SIGCHLD fallback (see 9), read once per process.
bool pidfdDisabled() {
  static const bool disabled = [] {
    const char* value = std::getenv("ASYNCDISPATCH_NO_PIDFD");
    return value != nullptr && *value != '\0' && std::string_view(value) != "0";
  }();
  return disabled;
}

#if defined(SYS_pidfd_open)
int pidfdOpen(int pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}
#else
int pidfdOpen(int) {
  errno = ENOSYS;
  return -1;
}
#endif

// Whether child pid has exited, without reaping it (WNOWAIT): the callback may waitpid it. A
// pid that is no longer our child was reaped by someone else, so it has exited too.
bool childExited(int pid) {
  siginfo_t info{};
  if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0)
    return errno == ECHILD;
  return info.si_pid == pid;
}

// Only a child can be waited for: the SIGCHLD fallback cannot see another process exit, and
// the callback's waitpid could not read its status.
void requireChild(int pid, const std::string& at) {
  siginfo_t info{};
  if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0) return;
  if (errno == ECHILD) throw OSError(ECHILD, at, "not a child of this process");
  throw OSError(errno, at + ": waitid");
}

} // namespace

template <class T>
SelectorKey<T>& Selector<T>::checkedKey(const char* op, SocketHandle fd) {
  if (!contains(fd)) throw ValueError(where(op, fd) + ": descriptor not registered");
  return fds[fd];
}

template <class T>
void Selector<T>::grow(SocketHandle fd) {
  if (static_cast<std::size_t>(fd) < fds.size()) return;
  const std::size_t size =
      std::max<std::size_t>({static_cast<std::size_t>(fd) + 1, fds.size() * 2, 1024});
  fds.resize(size);
  armed.resize(size, 0);
  params.resize(size, 0);
  generations.resize(size, 0);
  reported.resize(size, 0);
}

// The descriptor in the low 32 bits, its registration's generation in the high 32 (see 11).
template <class T>
std::uint64_t Selector<T>::tagOf(SocketHandle fd) const {
  return static_cast<std::uint64_t>(generations[fd]) << 32 | static_cast<std::uint32_t>(fd);
}

// Registers a kernel object made for a timer, signal, process or event key; it is armed (read
// interest) at once and counts until it is Finished or unregistered.
template <class T>
void Selector<T>::addKernelObject(const char* op, int fd, EventSet events, T data, int param) {
  grow(fd);
  SelectorKey<T>& key = fds[fd];
  if (key.fd != InvalidIdent) throw ValueError(where(op, fd) + ": descriptor already registered");
  ++generations[fd];
  control(epollFD, EPOLL_CTL_ADD, fd, EPOLLIN, tagOf(fd), op);
  key.fd = fd;
  key.events = events;
  key.data = std::move(data);
  armed[fd] = EPOLLIN;
  params[fd] = param;
  ++count;
}

// A oneshot timer that fired or a process that exited: out of the epoll set and no longer
// armed, but kept with Finished until the loop unregisters it, as Nim's selector does.
template <class T>
void Selector<T>::finish(SocketHandle fd) {
  control(epollFD, EPOLL_CTL_DEL, fd, 0, 0, "selectInto");
  armed[fd] = 0;
  fds[fd].events.incl(Event::Finished);
  --count;
}

// Opens the SIGCHLD fallback's signalfd unless it is open (see 9).
template <class T>
void Selector<T>::watchChildren(const std::string& at) {
  if (sigchldFD >= 0) return;
  watchSignal(SIGCHLD, at);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  UniqueFd fd(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  try {
    if (fd.get() < 0) throw OSError(errno, at + ": signalfd");
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
  if (sigchldFD < 0) return;
  epoll_event ev{};
  epoll_ctl(epollFD, EPOLL_CTL_DEL, sigchldFD, &ev);
  ::close(std::exchange(sigchldFD, -1));
  unwatchSignal(SIGCHLD);
}

// A SIGCHLD arrived: it may stand for any number of children (see 9), so every one still waited
// for is checked, and those that exited have their key's eventfd written.
template <class T>
void Selector<T>::checkChildren() {
  drainSignals(sigchldFD);
  std::erase_if(waitingChildren, [this](SocketHandle fd) {
    if (!childExited(params[fd])) return false;
    writeCounter(fd, "selectInto");
    return true;
  });
  if (waitingChildren.empty()) stopWatchingChildren();
}

SelectEvent::SelectEvent() : efd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (efd < 0) throw OSError(errno, "newSelectEvent: eventfd");
}

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
  for (const SelectorKey<T>& key : fds) {
    if (key.fd == InvalidIdent || !ownsKernelObject(key.events)) continue;
    ::close(key.fd);
    if (key.events.contains(Event::Signal)) unwatchSignal(params[key.fd]);
  }
  stopWatchingChildren();
  ::close(epollFD);
}

template <class T>
void Selector<T>::registerHandle(SocketHandle fd, EventSet events, T data) {
  if (fd < 0) throw ValueError(where("registerHandle", fd) + ": not a descriptor");
  grow(fd);
  SelectorKey<T>& key = fds[fd];
  if (key.fd != InvalidIdent)
    throw ValueError(where("registerHandle", fd) + ": descriptor already registered");
  ++generations[fd];
  key.fd = fd;
  key.data = std::move(data);
  updateHandle(fd, events);
}

template <class T>
void Selector<T>::updateHandle(SocketHandle fd, EventSet events) {
  SelectorKey<T>& key = checkedKey("updateHandle", fd);
  if (isKernelObject(key.events))
    throw ValueError(where("updateHandle", fd) + ": a timer, signal, process or event key");
  const std::uint32_t wanted = toEpollEvents(events);
  // Widen the kernel's interest at once. Narrow it at once only for Write, which a socket almost
  // always is and would report at every wait; a Read nobody waits for stays armed until an
  // unwanted event shows up (selectInto), so a connection that reads, then reads again, costs
  // no epoll_ctl at all.
  const std::uint32_t keep = (armed[fd] & EPOLLIN) | wanted;
  if (keep != armed[fd]) {
    if (keep == 0) {
      control(epollFD, EPOLL_CTL_DEL, fd, 0, 0, "updateHandle");
    } else {
      control(epollFD, armed[fd] == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, keep, tagOf(fd),
              "updateHandle");
    }
    armed[fd] = keep;
  }
  count += (events.empty() ? 0 : 1) - (key.events.empty() ? 0 : 1);
  key.events = events;
}

template <class T>
void Selector<T>::unregister(SocketHandle fd) {
  SelectorKey<T>& key = checkedKey("unregister", fd);
  const EventSet events = key.events;
  if (armed[fd] != 0) {
    // A descriptor closed behind our back has already left the epoll set (EBADF, ENOENT).
    epoll_event ev{};
    if (epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, &ev) != 0 && errno != EBADF && errno != ENOENT)
      throw OSError(errno, where("unregister", fd));
    armed[fd] = 0;
  }
  if (!events.empty() && !events.contains(Event::Finished)) --count;
  // The callbacks are destroyed last, once the table no longer holds the key: their destructors
  // may call back into the selector.
  T dropped = std::move(key.data);
  key = SelectorKey<T>{};
  const int param = std::exchange(params[fd], 0);
  // Nim's unregister closes the kernel objects the selector made; an event's is its own.
  if (!ownsKernelObject(events)) return;
  ::close(fd);
  if (events.contains(Event::Signal)) unwatchSignal(param);
  if (events.contains(Event::Process)) {
    std::erase(waitingChildren, fd);
    if (waitingChildren.empty()) stopWatchingChildren();
  }
}

template <class T>
SocketHandle Selector<T>::registerTimer(int timeout, bool oneshot, T data) {
  if (timeout <= 0)
    throw ValueError("registerTimer: timeout must be positive, got " + std::to_string(timeout));
  UniqueFd fd(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (fd.get() < 0) throw OSError(errno, "registerTimer: timerfd_create");
  itimerspec spec{};
  spec.it_value.tv_sec = timeout / 1000;
  spec.it_value.tv_nsec = static_cast<long>(timeout % 1000) * 1000000L;
  if (!oneshot) spec.it_interval = spec.it_value;
  if (timerfd_settime(fd.get(), 0, &spec, nullptr) != 0)
    throw OSError(errno, where("registerTimer", fd.get()) + ": timerfd_settime");
  const EventSet events = oneshot ? EventSet{Event::Timer, Event::Oneshot} : Event::Timer;
  addKernelObject("registerTimer", fd.get(), events, std::move(data), 0);
  return fd.release();
}

template <class T>
SocketHandle Selector<T>::registerSignal(int signal, T data) {
  const std::string at = where("registerSignal", "signal", signal);
  checkSignal(signal, at);
  watchSignal(signal, at);
  try {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signal);
    UniqueFd fd(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (fd.get() < 0) throw OSError(errno, at + ": signalfd");
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
  if (!pidfdDisabled()) {
    UniqueFd fd(pidfdOpen(pid));
    if (fd.get() >= 0) {
      addKernelObject("registerProcess", fd.get(), Event::Process, std::move(data), pid);
      return fd.release();
    }
    if (errno != ENOSYS && errno != EPERM) throw OSError(errno, at + ": pidfd_open");
  }
  // The SIGCHLD fallback (see 9): SIGCHLD is blocked before the child is checked, so an exit
  // after the check is pending on the signalfd, not lost.
  UniqueFd fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (fd.get() < 0) throw OSError(errno, at + ": eventfd");
  watchChildren(at);
  try {
    if (childExited(pid)) {
      writeCounter(fd.get(), "registerProcess");
    } else {
      waitingChildren.push_back(fd.get());
    }
    addKernelObject("registerProcess", fd.get(), Event::Process, std::move(data), pid);
  } catch (...) {
    std::erase(waitingChildren, fd.get());
    if (waitingChildren.empty()) stopWatchingChildren();
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
      checkChildren();
      continue;
    }
    // An event of an earlier registration of this number, still in the kernel (see 11).
    if (!contains(fd) || generation != generations[fd]) continue;
    reported[fd] = generation;
    const EventSet wanted = fds[fd].events;
    if (isKernelObject(wanted)) {
      // Consume what the kernel queued, or the key is reported again for the same expiry,
      // signal or trigger; a pidfd stays readable, but its key is finished at once.
      if (wanted.contains(Event::Timer) || wanted.contains(Event::User)) {
        if (!readCounter(fd)) continue;
      } else if (wanted.contains(Event::Signal)) {
        if (!drainSignals(fd)) continue;
      }
      ReadyKey rk{fd, wanted, 0};
      if (wanted.contains(Event::Oneshot) || wanted.contains(Event::Process)) {
        finish(fd);
        rk.events.incl(Event::Finished);
      }
      results[ready++] = rk;
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
        armed[fd] != narrowed) {
      control(epollFD, narrowed == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD, fd, narrowed, tagOf(fd),
              "selectInto");
      armed[fd] = narrowed;
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
void Selector<T>::dump(std::ostream& os) const {
  os << "  selector: Selector {\n"
     << "    epollFD: " << epollFD << ",\n"
     << "    events: array[64, epoll_event],\n"
     << "    fds: Table[SocketHandle, SelectorKey] {";
  bool any = false;
  for (const SelectorKey<T>& key : fds) {
    if (key.fd == InvalidIdent) continue;
    os << (any ? ",\n" : "\n") << "      " << key.fd << ": SelectorKey { fd: " << key.fd
       << ", events: " << key.events;
    // Nim's SelectorKey.param: the signal of a Signal key, the pid of a Process key.
    if (key.events.contains(Event::Signal) || key.events.contains(Event::Process))
      os << ", param: " << params[key.fd];
    os << ", data: " << key.data << " }";
    any = true;
  }
  os << (any ? "\n    }\n" : "}\n") << "  },\n";
}

template <class T>
bool Selector<T>::isCurrent(const ReadyKey& key) const {
  return contains(key.fd) && reported[key.fd] == generations[key.fd];
}

template class Selector<PData>;
static_assert(SelectorBackend<Selector<PData>>);

} // namespace asyncdispatch
