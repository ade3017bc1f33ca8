// kqueue()/kevent() emulated over epoll, timerfd, signalfd, eventfd and pidfd, so that the kqueue
// backend runs its whole suite on Linux. ABI and constants: FreeBSD >= 12 (see sys/event.h).
// The semantics followed are shared/reference/platform-semantics.md §A, and FreeBSD's
// kern_event.c where that text is silent. tests/emu/kqueue/selftest.cpp pins each one.
//
// What is emulated, and how:
//  1. A kq is an epoll descriptor (the number kqueue() returns), so close(kq) works. It holds an
//     eventfd (wakeFd: cross-thread wake-up, and the identity mark: EPOLL_CTL_MOD of wakeFd on
//     the number succeeds only on our epoll), two inner epolls (readsFd, writesFd: one epoll item
//     per (fd, filter), because epoll allows one item per fd but kqueue has a READ and a WRITE
//     knote per fd), one signalfd, and the timerfds and pidfds of its timers and processes.
//     State lives in a table keyed by the kq number, with the creator's pid and a mutex per kq:
//     a kq closed and its number reused fails the identity mark and is dropped (at the next
//     kevent() on that number, or by the sweep in kqueue()).
//  2. kevent(): every change is applied before any event is collected. An error (or EV_RECEIPT)
//     writes an entry with flags = EV_ERROR and data = errno while the event list has room, and
//     processing goes on; with no room it returns -1/errno and the rest is not applied. When any
//     such entry was written, kevent() returns their count at once without collecting (FreeBSD
//     kqueue_kevent). A change with filter 0 is skipped, as FreeBSD does. nevents == 0 returns
//     after the changes; timeout NULL waits forever, {0, 0} polls; EINTR comes after the changes.
//  3. Identity is (ident, filter): any change to an existing knote (a NOTE_TRIGGER too) replaces
//     its udata unless EV_KEEPUDATA (kern_event.c); EV_ADD of an existing knote modifies fflags and
//     data (never EV_ONESHOT/EV_CLEAR/EV_DISPATCH, which stay as created) and does not enable a
//     disabled knote (only EV_ENABLE does); EV_DELETE of a missing one is ENOENT. EV_ONESHOT
//     deletes after delivery, EV_DISPATCH disables after delivery, EV_DISABLE keeps the filter
//     running. Output flags are the creation flags minus the actions, plus EV_EOF.
//  4. READ/WRITE: level-triggered by default as an inner-epoll item with EPOLLONESHOT, re-armed
//     (EPOLL_CTL_MOD, which re-polls) after each delivery, so an item whose descriptor number
//     was closed while another reference keeps the file alive fires at most once more, never in
//     a busy loop. EV_CLEAR is EPOLLET; EV_ONESHOT/EV_DISPATCH add EPOLLONESHOT and are not
//     re-armed. A disabled knote is removed from epoll (EPOLLHUP/EPOLLERR cannot be masked).
//     READ data = FIONREAD, or for a listener the accept queue (TCP_INFO tcpi_unacked, at least
//     1); EV_EOF when the peer shut down or hung up (EPOLLRDHUP/EPOLLHUP), with data still
//     readable. WRITE data = send-buffer room (SO_SNDBUF - SIOCOUTQ, or pipe size - FIONREAD);
//     EV_EOF on EPOLLHUP/EPOLLERR.
//  5. fflags with EV_EOF carry the socket error, inferred WITHOUT reading SO_ERROR (which would
//     clear it: the application's own getsockopt after a failed connect would see 0 and its recv
//     after a reset would see EOF instead of ECONNRESET): on EPOLLERR a TCP socket that never
//     completed a handshake (tcpi_rtt == 0) gives ECONNREFUSED, any other ECONNRESET.
//  6. Lifetime: each fd knote keeps (st_dev, st_ino) of its descriptor; every change and every
//     report checks it with fstat. A closed number gives EBADF on EV_ADD/EV_DELETE, a reused one
//     starts fresh (EV_ADD) or gives ENOENT (EV_DELETE); events of a closed or reused number are
//     dropped. A kq used in a child after fork fails with EBADF (creator pid).
//  7. EVFILT_TIMER: one timerfd (CLOCK_MONOTONIC; CLOCK_REALTIME for NOTE_ABSTIME, one-shot);
//     data = period in ms or NOTE_SECONDS/MSECONDS/USECONDS/NSECONDS; periodic unless
//     EV_ONESHOT; a period of 0 fires at once (1 ns); EV_CLEAR implicit; data returned = the
//     timerfd expiration count; re-adding restarts it and discards what was not delivered.
//  8. EVFILT_SIGNAL: one signalfd per kq; EV_CLEAR implicit; data = deliveries read since the last
//     retrieval. Recorded even with SIG_IGN (a blocked signal is never discarded as ignored),
//     except SIGCHLD under SIG_IGN, which the kernel does not send, as on BSD.
//  9. EVFILT_PROC: pidfd_open at EV_ADD (ESRCH if no such pid; an exited child not yet reaped
//     still exists and is reported at once); on exit one event with EV_EOF|EV_ONESHOT, fflags
//     NOTE_EXIT if asked, data = the wait status (waitid WNOWAIT: the emulator never reaps).
// 10. EVFILT_USER: never fires by itself; NOTE_TRIGGER (from any thread) fires it; fflags
//     NOTE_FFNOP/FFAND/FFOR/FFCOPY combine the low 24 bits; data is the last change's data;
//     EV_CLEAR (on the knote) consumes each trigger, EV_CLEAR on a change cancels a trigger.
//
// Known differences from a real FreeBSD/macOS kqueue:
//  1. EVFILT_SIGNAL needs the signal BLOCKED for signalfd to see it: EV_ADD blocks it in the
//     calling thread (the first watcher records whether it was blocked before), the last EV_DELETE
//     or the drop of a closed kq puts the mask back, from whatever thread runs it. A signal sent to
//     another thread that has it unblocked is not seen, and a signal directed at one thread
//     (raise, pthread_kill) is seen only by a kevent() running in that thread (signalfd reads
//     the caller's own and the process's pending signals); children forked meanwhile inherit the
//     blocked mask. Real kqueue needs no blocking and lets the handler/default action run first.
//  2. signalfd coalesces a standard signal while pending: data counts deliveries read, which can
//     be fewer than sent (BSD counts each). Two kqs watching one signal split its deliveries.
//  3. fflags with EV_EOF are inferred (item 5): a connect that timed out or found no route reads
//     ECONNREFUSED, a reset of a half-closed socket ECONNRESET (BSD: EPIPE). Without EPOLLERR
//     fflags is 0. Our own shutdown(SHUT_WR) does not set EV_EOF on WRITE (Linux still reports
//     EPOLLOUT, no EPOLLHUP).
//  4. Regular files and directories: epoll refuses them (EPERM comes back as the change's error);
//     kqueue reports them readable with data = bytes to EOF. NOTE_LOWAT is ignored.
//  5. A descriptor closed and the same open file put back on the same number (dup2 of a dup)
//     passes the identity check: the old knote survives (BSD deletes it on close).
//  6. The state of a closed kq (its private descriptors: 3 + signalfd + one per timer/process,
//     and its blocked signals) is dropped lazily: at the next kqueue() (sweep) or kevent() on
//     its number, or when the program calls emu_kqueue_collect() (a test counting descriptors).
//     Timers and processes cost one descriptor each (EMFILE when exhausted).
//  7. EVFILT_PROC: NOTE_FORK/NOTE_EXEC/NOTE_TRACK never fire; a process reaped by the application
//     before its event is collected reports data 0; for a non-child data is 0 (waitid cannot).
//  8. EV_ENABLE of an EV_CLEAR knote whose condition still holds reports it again (epoll re-polls
//     on EPOLL_CTL_MOD/ADD); FreeBSD reports only if it became active while disabled.
//  9. EV_RECEIPT with a full event list stops processing and returns the entries written
//     (FreeBSD returns 0). EV_FORCEONESHOT is accepted and ignored.
// 10. A fork while another thread is inside kqueue()/kevent() can leave the child's copy of a
//     mutex held. Timeouts are rounded up to whole milliseconds (epoll_wait), not capped at 24 h.
//     In a forked child the kq number stays open (the parent's epoll, shared) though kevent() on
//     it fails; FreeBSD does not copy it into the child at all.
// 11. poll()/epoll on the kq descriptor itself sees kernel-backed readiness (descriptors, timers,
//     processes, a pending wake-up) but not a USER or SIGNAL event still pending after a scan.
#include <sys/event.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

namespace {

// Tags of the kq epoll's own items; knote ids (timers, processes, inner items) start above them
// and are never reused, so an event of a knote already gone finds nothing.
constexpr uint64_t kWakeTag = 1;
constexpr uint64_t kReadsTag = 2;
constexpr uint64_t kWritesTag = 3;
constexpr uint64_t kSignalsTag = 4;
constexpr uint64_t kFirstKnoteId = 16;

// The flags a knote keeps from its creating change (kern_event.c strips the actions).
constexpr unsigned short kActionFlags =
    EV_ADD | EV_DELETE | EV_ENABLE | EV_DISABLE | EV_FORCEONESHOT | EV_KEEPUDATA | EV_SYSFLAGS;

struct Knote {
  uint64_t id = 0;
  uintptr_t ident = 0;
  short filter = 0;
  unsigned short flags = 0; // EV_ONESHOT | EV_CLEAR | EV_DISPATCH | EV_RECEIPT, from creation
  unsigned fflags = 0;      // as last given (timer units, NOTE_EXIT); USER: the stored user bits
  int64_t data = 0;         // as last given (timer period, USER data)
  void* udata = nullptr;
  uint64_t ext2 = 0, ext3 = 0; // passed through untouched
  bool enabled = true;
  bool inEpoll = false; // READ/WRITE/TIMER/PROC: an item is in the kernel (maybe disarmed)
  dev_t dev = 0;        // READ/WRITE: identity of the descriptor at EV_ADD
  ino_t ino = 0;
  int ownFd = -1;         // TIMER: timerfd; PROC: pidfd
  bool triggered = false; // USER
  uint64_t count = 0;     // SIGNAL: deliveries since the last retrieval
};

// Who blocked which signal: the first watcher blocks it, the last one restores the mask.
struct SignalUse {
  int watchers = 0;
  bool wasBlocked = false;
};
std::mutex signalMutex;
SignalUse signalUse[NSIG];

void acquireSignal(int sig) {
  std::lock_guard<std::mutex> guard(signalMutex);
  if (signalUse[sig].watchers++ > 0) return;
  sigset_t one, old;
  sigemptyset(&one);
  sigaddset(&one, sig);
  pthread_sigmask(SIG_BLOCK, &one, &old);
  signalUse[sig].wasBlocked = sigismember(&old, sig) == 1;
}

void releaseSignal(int sig) {
  std::lock_guard<std::mutex> guard(signalMutex);
  if (--signalUse[sig].watchers > 0 || signalUse[sig].wasBlocked) return;
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, sig);
  pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
}

struct Kqueue {
  std::mutex mutex;
  int epfd = -1; // the kq descriptor itself
  pid_t owner = 0;
  int wakeFd = -1, readsFd = -1, writesFd = -1, signalFd = -1;
  sigset_t signals{};
  std::map<std::pair<uintptr_t, short>, std::unique_ptr<Knote>> knotes;
  std::unordered_map<uint64_t, Knote*> byId;
  std::vector<Knote*> soft; // USER and SIGNAL knotes: no kernel item, looked at on each scan
  uint64_t nextId = kFirstKnoteId;

  Kqueue() { sigemptyset(&signals); }
  Kqueue(const Kqueue&) = delete;
  Kqueue& operator=(const Kqueue&) = delete;
  // epfd is the application's (it closed it, or will); the rest is ours. In a forked child the
  // numbers are copies the child may already have reused: leave them alone there.
  ~Kqueue() {
    if (owner != getpid()) return;
    for (auto& [key, k] : knotes) {
      if (k->ownFd >= 0) ::close(k->ownFd);
      if (k->filter == EVFILT_SIGNAL) releaseSignal(static_cast<int>(k->ident));
    }
    for (int fd : {wakeFd, readsFd, writesFd, signalFd})
      if (fd >= 0) ::close(fd);
  }
};

struct Table {
  std::mutex mutex;
  std::map<int, std::shared_ptr<Kqueue>> byFd;
};
Table& table() {
  static Table* t = new Table; // never destroyed: kevent() may run during static destruction
  return *t;
}

// Whether the number still names the epoll this state was made for (item 1).
bool stillOurs(const Kqueue& q, int fd) {
  if (q.owner != getpid()) return false;
  epoll_event mark{};
  mark.events = EPOLLIN;
  mark.data.u64 = kWakeTag;
  return epoll_ctl(fd, EPOLL_CTL_MOD, q.wakeFd, &mark) == 0;
}

// Takes the state of every kq whose descriptor was closed (or is `reused`, a number a new kq has
// just been given) out of the table; the caller destroys it, which closes its private descriptors
// and puts its signals' mask back (item 6).
std::vector<std::shared_ptr<Kqueue>> sweep(int reused) {
  std::vector<std::shared_ptr<Kqueue>> stale;
  std::lock_guard<std::mutex> guard(table().mutex);
  for (auto it = table().byFd.begin(); it != table().byFd.end();) {
    if (it->first == reused || !stillOurs(*it->second, it->first)) {
      stale.push_back(std::move(it->second));
      it = table().byFd.erase(it);
    } else {
      ++it;
    }
  }
  return stale;
}

std::shared_ptr<Kqueue> lookup(int fd) {
  std::shared_ptr<Kqueue> stale;
  std::lock_guard<std::mutex> guard(table().mutex);
  auto it = table().byFd.find(fd);
  if (it == table().byFd.end()) return nullptr;
  if (it->second->owner != getpid()) return nullptr; // not inherited across fork
  if (stillOurs(*it->second, fd)) return it->second;
  stale = std::move(it->second); // destroyed after the guard is released
  table().byFd.erase(it);
  return nullptr;
}

void wake(const Kqueue& q) {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(q.wakeFd, &one, sizeof one);
}

int innerFdOf(const Kqueue& q, const Knote& k) {
  if (k.filter == EVFILT_READ) return q.readsFd;
  if (k.filter == EVFILT_WRITE) return q.writesFd;
  return q.epfd;
}

uint32_t epollEventsOf(const Knote& k) {
  if (k.filter == EVFILT_TIMER || k.filter == EVFILT_PROC) return EPOLLIN;
  uint32_t events = k.filter == EVFILT_READ ? (EPOLLIN | EPOLLRDHUP) : EPOLLOUT;
  if (k.flags & EV_CLEAR) events |= EPOLLET;
  if (!(k.flags & EV_CLEAR) || (k.flags & (EV_ONESHOT | EV_DISPATCH))) events |= EPOLLONESHOT;
  return events;
}

// Puts the knote's item into (or back into) the kernel, re-polling its condition.
int arm(const Kqueue& q, Knote& k) {
  const int fd = k.ownFd >= 0 ? k.ownFd : static_cast<int>(k.ident);
  epoll_event ev{};
  ev.events = epollEventsOf(k);
  ev.data.u64 = k.id;
  if (epoll_ctl(innerFdOf(q, k), k.inEpoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0) {
    // EEXIST: an item of this same open file under this number outlived its knote (item 4)
    if (k.inEpoll || errno != EEXIST) return errno;
    if (epoll_ctl(innerFdOf(q, k), EPOLL_CTL_MOD, fd, &ev) != 0) return errno;
  }
  k.inEpoll = true;
  return 0;
}

void disarm(const Kqueue& q, Knote& k) {
  if (!k.inEpoll) return;
  const int fd = k.ownFd >= 0 ? k.ownFd : static_cast<int>(k.ident);
  epoll_ctl(innerFdOf(q, k), EPOLL_CTL_DEL, fd, nullptr); // ENOENT/EBADF: already gone
  k.inEpoll = false;
}

void updateSignalFd(Kqueue& q) {
  q.signalFd = signalfd(q.signalFd, &q.signals, SFD_NONBLOCK | SFD_CLOEXEC);
}

void erase(Kqueue& q, Knote* k) {
  disarm(q, *k);
  if (k->ownFd >= 0) ::close(k->ownFd);
  if (k->filter == EVFILT_SIGNAL) {
    sigdelset(&q.signals, static_cast<int>(k->ident));
    updateSignalFd(q);
    releaseSignal(static_cast<int>(k->ident));
  }
  std::erase(q.soft, k);
  q.byId.erase(k->id);
  q.knotes.erase({k->ident, k->filter});
}

bool isSoft(short filter) {
  return filter == EVFILT_USER || filter == EVFILT_SIGNAL;
}

bool softReady(const Knote& k) {
  return k.enabled && (k.filter == EVFILT_USER ? k.triggered : k.count > 0);
}

// ---- filters: creating and touching -----------------------------------------------------------

// The descriptor's identity, or an errno (EBADF when the number is closed).
int identify(uintptr_t ident, struct stat& st) {
  if (ident > static_cast<uintptr_t>(INT_MAX)) return EBADF;
  return fstat(static_cast<int>(ident), &st) == 0 ? 0 : errno;
}

bool sameFile(const Knote& k, const struct stat& st) {
  return k.dev == st.st_dev && k.ino == st.st_ino;
}

// Timer period in nanoseconds from data and the unit bits; -1 for EINVAL.
int64_t timerNanoseconds(const struct kevent& kev) {
  if (kev.data < 0) return -1;
  int64_t scale = 1000000;
  switch (kev.fflags & (NOTE_SECONDS | NOTE_MSECONDS | NOTE_USECONDS | NOTE_NSECONDS)) {
  case 0:
  case NOTE_MSECONDS:
    break;
  case NOTE_SECONDS:
    scale = 1000000000;
    break;
  case NOTE_USECONDS:
    scale = 1000;
    break;
  case NOTE_NSECONDS:
    scale = 1;
    break;
  default:
    return -1;
  }
  if (kev.data > INT64_MAX / scale) return INT64_MAX;
  return kev.data * scale;
}

int startTimer(Knote& k, const struct kevent& kev) {
  const int64_t ns = timerNanoseconds(kev);
  if (ns < 0) return EINVAL;
  const bool absolute = kev.fflags & NOTE_ABSTIME;
  if (k.ownFd < 0) {
    k.ownFd =
        timerfd_create(absolute ? CLOCK_REALTIME : CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (k.ownFd < 0) return errno;
  }
  itimerspec spec{};
  const int64_t first = std::max<int64_t>(ns, 1); // a zero it_value would disarm the timerfd
  spec.it_value = {static_cast<time_t>(first / 1000000000), static_cast<long>(first % 1000000000)};
  if (!(k.flags & EV_ONESHOT) && !absolute) spec.it_interval = spec.it_value;
  if (timerfd_settime(k.ownFd, absolute ? TFD_TIMER_ABSTIME : 0, &spec, nullptr) != 0) return errno;
  return 0;
}

void touchUser(Kqueue& q, Knote& k, const struct kevent& kev) {
  if (kev.fflags & NOTE_TRIGGER) k.triggered = true;
  const unsigned bits = kev.fflags & NOTE_FFLAGSMASK;
  switch (kev.fflags & NOTE_FFCTRLMASK) {
  case NOTE_FFAND:
    k.fflags &= bits;
    break;
  case NOTE_FFOR:
    k.fflags |= bits;
    break;
  case NOTE_FFCOPY:
    k.fflags = bits;
    break;
  default:
    break; // NOTE_FFNOP
  }
  k.data = kev.data;
  if (kev.flags & EV_CLEAR) k.triggered = false;
  if (softReady(k)) wake(q);
}

// Creates the knote's kernel side; an errno on failure (then nothing is left behind).
int attach(Kqueue& q, Knote& k, const struct kevent& kev, const struct stat& st) {
  switch (k.filter) {
  case EVFILT_READ:
  case EVFILT_WRITE:
    k.dev = st.st_dev;
    k.ino = st.st_ino;
    return k.enabled ? arm(q, k) : 0;
  case EVFILT_TIMER: {
    k.flags |= EV_CLEAR;
    k.fflags = kev.fflags;
    k.data = kev.data;
    if (const int error = startTimer(k, kev); error != 0) return error;
    return k.enabled ? arm(q, k) : 0;
  }
  case EVFILT_PROC: {
    if (kev.ident == 0 || kev.ident > static_cast<uintptr_t>(INT_MAX)) return ESRCH;
    const long fd = syscall(SYS_pidfd_open, static_cast<pid_t>(kev.ident), 0);
    if (fd < 0) return errno == EINVAL ? ESRCH : errno;
    k.ownFd = static_cast<int>(fd);
    k.fflags = kev.fflags;
    return k.enabled ? arm(q, k) : 0;
  }
  case EVFILT_SIGNAL: {
    const int sig = static_cast<int>(kev.ident);
    if (kev.ident == 0 || kev.ident >= static_cast<uintptr_t>(NSIG)) return EINVAL;
    k.flags |= EV_CLEAR;
    acquireSignal(sig);
    sigaddset(&q.signals, sig);
    const bool first = q.signalFd < 0;
    updateSignalFd(q);
    if (q.signalFd < 0) {
      const int error = errno;
      sigdelset(&q.signals, sig);
      releaseSignal(sig);
      return error;
    }
    if (first) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kSignalsTag;
      epoll_ctl(q.epfd, EPOLL_CTL_ADD, q.signalFd, &ev);
    }
    q.soft.push_back(&k);
    return 0;
  }
  case EVFILT_USER: // filt_userattach: no fflags arithmetic, no EV_CLEAR reset at creation
    k.triggered = kev.fflags & NOTE_TRIGGER;
    k.fflags = kev.fflags & NOTE_FFLAGSMASK;
    k.data = kev.data;
    q.soft.push_back(&k);
    if (softReady(k)) wake(q);
    return 0;
  default:
    return EINVAL;
  }
}

// Applies one change; returns 0 or the errno for its EV_ERROR entry.
int apply(Kqueue& q, const struct kevent& kev) {
  const short filter = kev.filter;
  if (filter != EVFILT_READ && filter != EVFILT_WRITE && filter != EVFILT_TIMER &&
      filter != EVFILT_PROC && filter != EVFILT_SIGNAL && filter != EVFILT_USER)
    return EINVAL;
  const bool isFd = filter == EVFILT_READ || filter == EVFILT_WRITE;
  struct stat st {};
  auto it = q.knotes.find({kev.ident, filter});
  Knote* k = it == q.knotes.end() ? nullptr : it->second.get();
  if (isFd) {
    const int error = identify(kev.ident, st);
    // Closed or reused: the knote died with the descriptor (item 6)
    if (k != nullptr && (error != 0 || !sameFile(*k, st))) {
      erase(q, k);
      k = nullptr;
    }
    if (error != 0) return error;
  }
  if (k == nullptr) {
    if (!(kev.flags & EV_ADD)) return ENOENT;
    auto created = std::make_unique<Knote>();
    created->id = q.nextId++;
    created->ident = kev.ident;
    created->filter = filter;
    created->flags = kev.flags & ~kActionFlags;
    created->udata = kev.udata;
    created->ext2 = kev.ext[2];
    created->ext3 = kev.ext[3];
    created->enabled = !(kev.flags & EV_DISABLE);
    k = created.get();
    q.knotes[{kev.ident, filter}] = std::move(created);
    q.byId[k->id] = k;
    if (const int error = attach(q, *k, kev, st); error != 0) {
      erase(q, k);
      return error;
    }
    if (kev.flags & EV_DELETE) erase(q, k);
    return 0;
  }
  if (kev.flags & EV_DELETE) {
    erase(q, k);
    return 0;
  }
  if (!(kev.flags & EV_KEEPUDATA)) k->udata = kev.udata;
  k->ext2 = kev.ext[2];
  k->ext3 = kev.ext[3];
  const bool wasEnabled = k->enabled;
  if (kev.flags & EV_ENABLE)
    k->enabled = true;
  else if (kev.flags & EV_DISABLE)
    k->enabled = false;
  switch (filter) {
  case EVFILT_TIMER:
    if (kev.flags & EV_ADD) {
      k->fflags = kev.fflags;
      k->data = kev.data;
      if (const int error = startTimer(*k, kev); error != 0) return error;
    }
    break;
  case EVFILT_USER:
    touchUser(q, *k, kev);
    break;
  case EVFILT_PROC:
  case EVFILT_READ:
  case EVFILT_WRITE:
    k->fflags = kev.fflags;
    break;
  default:
    break;
  }
  if (isSoft(filter)) {
    if (softReady(*k)) wake(q);
    return 0;
  }
  if (!k->enabled) {
    disarm(q, *k);
    return 0;
  }
  // Re-evaluated as kern_event.c's done_ev_add does: re-poll on modify and on enable
  if (!wasEnabled || (kev.flags & (EV_ADD | EV_ENABLE))) return arm(q, *k);
  return 0;
}

// ---- collecting --------------------------------------------------------------------------------

// The error a socket reports with EV_EOF, without consuming SO_ERROR (item 5).
unsigned socketError(int fd, uint32_t events) {
  if (!(events & EPOLLERR)) return 0;
  tcp_info info{};
  socklen_t len = sizeof info;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 && info.tcpi_rtt == 0)
    return ECONNREFUSED;
  return ECONNRESET;
}

int64_t readable(int fd, const struct stat& st) {
  int n = 0;
  if (ioctl(fd, FIONREAD, &n) == 0) return n;
  if (!S_ISSOCK(st.st_mode)) return 0;
  // A listener: FIONREAD is EINVAL; its accept queue is TCP_INFO's tcpi_unacked (tcp_diag)
  tcp_info info{};
  socklen_t len = sizeof info;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 && info.tcpi_unacked > 0)
    return info.tcpi_unacked;
  return 1;
}

int64_t writable(int fd, const struct stat& st) {
  int queued = 0;
  if (S_ISFIFO(st.st_mode)) {
    const int size = fcntl(fd, F_GETPIPE_SZ);
    if (size < 0 || ioctl(fd, FIONREAD, &queued) != 0) return 0;
    return std::max(size - queued, 0);
  }
  int size = 0;
  socklen_t len = sizeof size;
  if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, &len) != 0) return 0;
  if (ioctl(fd, SIOCOUTQ, &queued) != 0) queued = 0;
  return std::max(size - queued, 0);
}

struct kevent entryOf(const Knote& k) {
  struct kevent out {};
  out.ident = k.ident;
  out.filter = k.filter;
  out.flags = k.flags;
  out.fflags = k.fflags;
  out.data = k.data;
  out.udata = k.udata;
  out.ext[2] = k.ext2;
  out.ext[3] = k.ext3;
  return out;
}

// After a delivery: EV_ONESHOT deletes, EV_DISPATCH disables.
void delivered(Kqueue& q, Knote* k) {
  if (k->flags & EV_ONESHOT) {
    erase(q, k);
  } else if (k->flags & EV_DISPATCH) {
    k->enabled = false;
    if (!isSoft(k->filter) && k->ownFd >= 0) disarm(q, *k); // inner items are EPOLLONESHOT
  }
}

// epoll_event is packed on x86-64: its fields are copied out, never bound to a reference.
bool reportFd(Kqueue& q, uint64_t id, uint32_t events, struct kevent& out) {
  auto it = q.byId.find(id);
  if (it == q.byId.end() || !it->second->enabled) return false;
  Knote* k = it->second;
  const int fd = static_cast<int>(k->ident);
  struct stat st {};
  if (fstat(fd, &st) != 0 || !sameFile(*k, st)) { // closed or reused since (item 6)
    erase(q, k);
    return false;
  }
  out = entryOf(*k);
  out.fflags = 0;
  if (k->filter == EVFILT_READ) {
    out.data = readable(fd, st);
    if (events & (EPOLLRDHUP | EPOLLHUP)) out.flags |= EV_EOF;
  } else {
    out.data = writable(fd, st);
    if (events & (EPOLLHUP | EPOLLERR)) out.flags |= EV_EOF;
  }
  if (S_ISSOCK(st.st_mode)) out.fflags = socketError(fd, events);
  if (!(k->flags & (EV_CLEAR | EV_ONESHOT | EV_DISPATCH))) arm(q, *k); // level: re-arm (item 4)
  delivered(q, k);
  return true;
}

int waitStatus(pid_t pid) {
  siginfo_t info{};
  if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT | WNOHANG) != 0) return 0;
  switch (info.si_code) {
  case CLD_EXITED:
    return (info.si_status & 0xff) << 8;
  case CLD_KILLED:
    return info.si_status & 0x7f;
  case CLD_DUMPED:
    return (info.si_status & 0x7f) | 0x80;
  default:
    return 0;
  }
}

bool reportOwned(Kqueue& q, uint64_t id, struct kevent& out) {
  auto it = q.byId.find(id);
  if (it == q.byId.end() || !it->second->enabled) return false;
  Knote* k = it->second;
  out = entryOf(*k);
  if (k->filter == EVFILT_TIMER) {
    uint64_t expirations = 0;
    if (::read(k->ownFd, &expirations, sizeof expirations) != sizeof expirations) return false;
    out.data = static_cast<int64_t>(expirations);
    if (k->fflags & NOTE_ABSTIME) k->flags |= EV_ONESHOT;
  } else {
    out.flags |= EV_EOF | EV_ONESHOT;
    out.fflags = k->fflags & NOTE_EXIT;
    out.data = waitStatus(static_cast<pid_t>(k->ident));
    k->flags |= EV_ONESHOT; // the process is gone: the knote goes with this event
  }
  delivered(q, k);
  return true;
}

bool reportSoft(Kqueue& q, Knote* k, struct kevent& out) {
  if (!softReady(*k)) return false;
  out = entryOf(*k);
  if (k->filter == EVFILT_SIGNAL) {
    out.data = static_cast<int64_t>(k->count);
    k->count = 0;
  } else if (k->flags & EV_CLEAR) {
    k->triggered = false;
  }
  delivered(q, k);
  return true;
}

void drainSignals(Kqueue& q) {
  signalfd_siginfo info[16];
  ssize_t n;
  while ((n = ::read(q.signalFd, info, sizeof info)) > 0) {
    for (size_t i = 0; i < static_cast<size_t>(n) / sizeof info[0]; ++i) {
      auto it = q.knotes.find({info[i].ssi_signo, EVFILT_SIGNAL});
      if (it != q.knotes.end()) ++it->second->count;
    }
  }
}

// Turns what the kq epoll reported into at most `room` entries.
int collect(Kqueue& q, const epoll_event* ready, int nready, struct kevent* out, int room) {
  int n = 0;
  for (int i = 0; i < nready && n < room; ++i) {
    const uint64_t tag = ready[i].data.u64;
    if (tag == kWakeTag) {
      uint64_t count;
      [[maybe_unused]] ssize_t got = ::read(q.wakeFd, &count, sizeof count);
    } else if (tag == kSignalsTag) {
      drainSignals(q);
    } else if (tag == kReadsTag || tag == kWritesTag) {
      epoll_event items[64];
      const int got =
          epoll_wait(tag == kReadsTag ? q.readsFd : q.writesFd, items, std::min(room - n, 64), 0);
      for (int j = 0; j < got; ++j)
        n += reportFd(q, items[j].data.u64, items[j].events, out[n]) ? 1 : 0;
    } else {
      n += reportOwned(q, tag, out[n]) ? 1 : 0;
    }
  }
  const std::vector<Knote*> soft = q.soft; // a delivery may erase the one being reported
  for (Knote* k : soft)
    if (n < room) n += reportSoft(q, k, out[n]) ? 1 : 0;
  return n;
}

int64_t nowNanoseconds() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec;
}

// Waits (the kq mutex released) and collects until something is reported or the time is up.
int scan(Kqueue& q, std::unique_lock<std::mutex>& lock, struct kevent* out, int room,
         const timespec* timeout) {
  int64_t deadline = -1; // forever
  if (timeout != nullptr) {
    if (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000) {
      errno = EINVAL;
      return -1;
    }
    const int64_t limit = INT64_MAX / 2 / 1000000000;
    deadline = nowNanoseconds() + std::min<int64_t>(timeout->tv_sec, limit) * 1000000000 +
               timeout->tv_nsec;
  }
  for (;;) {
    int ms = -1;
    if (std::any_of(q.soft.begin(), q.soft.end(), [](const Knote* k) { return softReady(*k); })) {
      ms = 0;
    } else if (deadline >= 0) {
      const int64_t left = std::max<int64_t>(deadline - nowNanoseconds(), 0);
      ms = static_cast<int>(std::min<int64_t>((left + 999999) / 1000000, INT_MAX)); // round up
    }
    epoll_event ready[64];
    lock.unlock();
    const int nready = epoll_wait(q.epfd, ready, 64, ms);
    const int error = errno;
    lock.lock();
    if (nready < 0) {
      errno = error;
      return -1;
    }
    const int n = collect(q, ready, nready, out, room);
    if (n > 0) return n;
    if (deadline >= 0 && nowNanoseconds() >= deadline) return 0;
  }
}

} // namespace

extern "C" int kqueue(void) {
  auto q = std::make_shared<Kqueue>();
  q->owner = getpid();
  q->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (q->epfd < 0) return -1;
  q->wakeFd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  q->readsFd = epoll_create1(EPOLL_CLOEXEC);
  q->writesFd = epoll_create1(EPOLL_CLOEXEC);
  bool ok = q->wakeFd >= 0 && q->readsFd >= 0 && q->writesFd >= 0;
  for (auto [fd, tag] : {std::pair{q->wakeFd, kWakeTag}, std::pair{q->readsFd, kReadsTag},
                         std::pair{q->writesFd, kWritesTag}}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    ok = ok && epoll_ctl(q->epfd, EPOLL_CTL_ADD, fd, &ev) == 0;
  }
  if (!ok) {
    const int error = errno;
    ::close(q->epfd);
    errno = error;
    return -1;
  }
  std::vector<std::shared_ptr<Kqueue>> stale = sweep(q->epfd); // destroyed after the guard
  std::lock_guard<std::mutex> guard(table().mutex);
  table().byFd[q->epfd] = q;
  return q->epfd;
}

extern "C" void emu_kqueue_collect(void) {
  sweep(-1);
}

extern "C" int kevent(int kq, const struct kevent* changelist, int nchanges,
                      struct kevent* eventlist, int nevents, const struct timespec* timeout) {
  std::shared_ptr<Kqueue> q = lookup(kq);
  if (q == nullptr) {
    errno = EBADF;
    return -1;
  }
  if (nchanges < 0 || nevents < 0) {
    errno = EINVAL;
    return -1;
  }
  std::unique_lock<std::mutex> lock(q->mutex);
  int n = 0;
  for (int i = 0; i < nchanges; ++i) {
    struct kevent change = changelist[i]; // the same array may be the event list
    if (change.filter == 0) continue;
    change.flags &= ~EV_SYSFLAGS;
    const int error = apply(*q, change);
    if (error == 0 && !(change.flags & EV_RECEIPT)) continue;
    if (n == nevents) {
      if (error == 0) return n;
      errno = error;
      return -1;
    }
    eventlist[n] = change;
    eventlist[n].flags = EV_ERROR;
    eventlist[n].data = error;
    ++n;
  }
  if (n > 0 || nevents == 0) return n;
  return scan(*q, lock, eventlist, nevents, timeout);
}
