// eventports.cpp: illumos event ports emulated on Linux over epoll, timerfd and eventfd, so that
// the event ports backend (platform/illumos/) runs the whole suite here. The behaviour follows
// the illumos man pages port_create(3C), port_associate(3C), port_get(3C), port_send(3C),
// port_alert(3C), timer_create(3C) and the kernel they describe (usr/src/uts/common/fs/portfs/
// port.c and port_fd.c, usr/src/uts/common/os/timer.c); see also shared/reference/
// platform-semantics.md §B.
//
// What is emulated:
//  1. port_create() returns an epoll descriptor, so close(port) is the real teardown; the
//     emulator keeps per-port state (creator pid, queue, associations) keyed by that number and
//     checks on every call that the number still names one of its epoll instances (the one
//     eventfd it shares among them for cross-thread wake-ups is registered there). State of a
//     closed port owns no descriptor and is dropped when the number is next used or at the next
//     port_create(); a number that names no port gives EBADF when it is no descriptor, EBADFD
//     when it is another one. Every function is thread-safe: a mutex per port, and one for
//     the table of ports and timers (taken first when both are needed).
//  2. PORT_SOURCE_FD associations are one-shot (EPOLLONESHOT plus bookkeeping): an event leaves
//     the epoll set for the port's queue, and retrieving it ends the association, so the fd is
//     never reported again until port_associate() is called again; port_dissociate() then gives
//     ENOENT. Associating an associated fd replaces its events mask and user, and discards an
//     event queued for it but not yet retrieved (port_associate_fd). If the condition already
//     holds at associate time (checked with poll(2)) the event is queued at once.
//  3. portev_events of an fd event = the poll(2) bits that fired among those asked for, plus
//     POLLHUP and POLLERR which are never filtered (revents & (events | POLLHUP | POLLERR) in
//     port_associate_fd). Linux gives POLL* and EPOLL* the same values, so they pass unchanged.
//  4. An fd closed while associated loses its association, and an event queued for it is never
//     delivered (illumos removes both in close(2), port_close_pfd). The emulator cannot see
//     close(): each association keeps st_dev/st_ino of its file and a generation number carried
//     in the epoll registration. Before events are counted or handed out, each queued fd event
//     is checked with fstat(2): a closed fd, or a number now naming another file, drops the event
//     and the association (so a reused number starts fresh and never receives the old file's
//     event). port_dissociate() of a closed fd gives EBADFD, of a reused number ENOENT, as
//     port_dissociate_fd does. epoll removes a closed file by itself once its last descriptor is
//     gone; a registration that survives in a dup is disarmed or fires with a stale generation
//     and is ignored.
//  5. port_getn(port, list, max, &nget, timeout) as port.c: max == 0 stores the number of queued
//     events in *nget and retrieves nothing; *nget > max (max > 0) is EINVAL; *nget == 0
//     returns 0 at once; otherwise it waits until *nget events are queued and retrieves up to
//     max. timeout NULL waits forever; a zeroed timeout polls and returns 0 with whatever is
//     queued, possibly fewer than *nget or none; a timeout that expires returns -1/ETIME with the
//     events that were queued (fewer than *nget, possibly some) retrieved and *nget updated.
//     A signal returns -1/EINTR with nothing retrieved and *nget untouched. port_get() is
//     port_getn(max 1, nget 1), except that, as in the kernel's PORT_GET, an expired timeout
//     returns -1/ETIME without an event and a zeroed timeout with nothing queued returns 0
//     without writing *pe.
//  6. Test mode (emu_port_quirks() or EMU_PORT_QUIRKS=<flags> in the environment):
//     EMU_PORT_QUIRK_ETIME_WITH_EVENTS makes every retrieval under a non-NULL timeout return
//     -1/ETIME with the events and *nget, which libuv and Redis guard against (illumos-joyent
//     OS-7991, "port_get() and port_getn() implementation disagrees with documentation");
//     EMU_PORT_QUIRK_NGET_NOT_UPDATED leaves *nget at its input value on ETIME without events.
//  7. port_send() queues one PORT_SOURCE_USER event per call (never coalesced) with
//     portev_events = events, portev_user = user, portev_object = 0; it is safe from any thread
//     and wakes a thread blocked in port_getn. More than process.max-port-events queued user
//     events (emu_port_max_events(), default 65536, read at port_create) give EAGAIN.
//     port_sendn() sends to each port and reports per-port errors.
//  8. port_alert(): events != 0 enters alert mode (PORT_ALERT_SET overwrites an alert already
//     set, PORT_ALERT_UPDATE gives EBUSY then, both flags EINVAL, as port.c), events == 0 leaves
//     it. In alert mode every port_get/port_getn returns at once with one PORT_SOURCE_ALERT event
//     that is not consumed; other events keep accumulating and are retrievable afterwards.
//  9. Timers: emu_timer_create (timer_create through <port.h>) with SIGEV_PORT and
//     sival_ptr = &port_notify_t gets a timerfd registered in the port. Ids are the lowest free
//     small integer from 0, as timer.c hands out. An expiration queues one PORT_SOURCE_TIMER
//     event (portev_object = id, portev_user = portnfy_user); further expirations before it is
//     retrieved queue nothing but are counted, and portev_events = the number of expirations
//     since the event was queued (timer_port_callback: "1 = 1 event, >1 # of overflows").
//     timer_getoverrun() of a port timer is 0, as on illumos where it_overrun is only set by
//     signal delivery. timer_delete() removes an event queued but not retrieved. Relative and
//     TIMER_ABSTIME settings, periodic it_interval and disarming are timerfd's. Other sigev_notify
//     values are forwarded to glibc's timer_create under an emulator id.
//
// Known differences from illumos:
//  a. A closed fd whose number is reused for the same file (a dup of it, the same file opened
//     again) cannot be told from the original: its association and queued event survive.
//  b. close(port) does not wake a thread blocked in port_getn on it (illumos returns EBADFD);
//     that thread waits until its timeout. Events queued in a closed port are simply forgotten.
//  c. port_send() takes a mutex and is not async-signal-safe (illumos: Async-Signal-Safe).
//  d. EINTR is seen by the thread waiting in epoll_wait; another thread waiting on the same port
//     at the same time waits on a condition variable and is not interrupted by signals.
//  e. After fork(), the child sees ports created by the parent as invalid (EBADFD); illumos lets
//     it retrieve shareable events. Regular files are always ready, as poll(2) says; an
//     association asking only for bits a regular file never reports is accepted and never fires.
//  f. Only PORT_SOURCE_FD may be associated (PORT_SOURCE_FILE gives ENOTSUP); there is no AIO or
//     MQ source, no port_dispatch, and max-port-events limits only port_send, not associations.
//  g. Timers accept the clocks timerfd accepts (CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME,
//     ...); illumos's CLOCK_HIGHRES is Linux's CLOCK_MONOTONIC. SIGEV_THREAD_ID, which has
//     SIGEV_PORT's value, cannot be asked for. A timer of a closed port stays usable but
//     delivers nothing, as timer_close_port leaves it.
//  h. POLLNVAL is never reported: illumos removes the association when the fd is closed (4.).
//  i. A port is known by the number port_create() returned: a dup of it is not a port (EBADFD),
//     and a dup of another port moved onto a closed port's number is taken for the closed port.
//     The emulator holds one descriptor of its own (the shared eventfd) from the first
//     port_create() to the end of the process.

#define EMU_PORT_NO_TIMER_MACROS
#include <port.h>

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// epoll_data.u64 of every registration: kind in bits 62-63, generation in bits 32-61, object
// (fd or timer id) in bits 0-31. The generation tells a live registration from a stale one.
enum class Kind : uint64_t { wake = 0, fd = 1, timer = 2 };
constexpr uint32_t kGenMask = 0x3fffffff;

uint64_t tag(Kind kind, uint32_t gen, uint32_t object) {
  return (uint64_t(kind) << 62) | (uint64_t(gen & kGenMask) << 32) | object;
}

// The poll(2) bits an association may ask for; on Linux they equal the EPOLL* bits.
constexpr int kPollable =
    POLLIN | POLLPRI | POLLOUT | POLLRDNORM | POLLRDBAND | POLLWRNORM | POLLWRBAND | POLLRDHUP;
// Reported even when not asked for (port_associate_fd).
constexpr int kAlways = POLLHUP | POLLERR;
// process.max-port-events default of illumos.
constexpr int kDefaultMaxEvents = 65536;

struct Association {
  int events = 0;
  void* user = nullptr;
  dev_t dev = 0;
  ino_t ino = 0;
  uint32_t gen = 0;
  bool queued = false; // its event waits in the port's queue
};

struct PortTimer {
  int tfd = -1;
  void* user = nullptr;
  uint32_t gen = 0;
  uint64_t pending = 0; // expirations since the queued event was queued
  bool queued = false;
};

struct Queued {
  port_event_t ev;
  uint32_t gen; // of the association or timer it came from
};

struct Port {
  int fd = -1; // the epoll instance, owned by the user
  pid_t pid = 0;
  int doorbell = -1; // Registry::doorbell, in this epoll set too
  int maxEvents = kDefaultMaxEvents;
  std::mutex mu;
  std::condition_variable changed; // for threads waiting while another one is in epoll_wait
  std::deque<Queued> done;         // fired, not yet retrieved, in order
  std::unordered_map<int, Association> fds;
  std::unordered_map<int, PortTimer> timers;
  uint32_t nextGen = 0;
  int userQueued = 0;
  bool alert = false;
  int alertEvents = 0;
  void* alertUser = nullptr;
  bool polling = false;     // a thread is in epoll_wait without the mutex
  bool wakePending = false; // the doorbell was rung for the thread in epoll_wait

  uint32_t newGen() {
    nextGen = (nextGen + 1) & kGenMask;
    if (nextGen == 0) nextGen = 1;
    return nextGen;
  }
};

struct TimerSlot {
  bool used = false;
  bool forwarded = false; // a glibc timer (notification other than SIGEV_PORT)
  timer_t real{};
  int tfd = -1;
  uint32_t gen = 0;
  std::weak_ptr<Port> port;
};

// Lock order: Registry::mu before Port::mu.
struct Registry {
  std::mutex mu;
  std::unordered_map<int, std::shared_ptr<Port>> ports;
  std::vector<TimerSlot> timers; // index = timer id
  uint32_t timerGen = 0;
  int maxEvents = kDefaultMaxEvents;
  // One eventfd for the whole process, in every port's epoll set, edge-triggered and never read
  // (its count stays above 0): each write wakes every thread in epoll_wait on any port. It lets
  // another thread wake a port without the port owning a descriptor of its own, which would
  // outlive close(port) until the emulator next looked (1.); a wake-up meant for another port
  // costs one more turn of the loop.
  int doorbell = -1;
};

// Never destroyed, so that threads still in the emulator at exit find it intact.
Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

std::atomic<int>& quirks() {
  static std::atomic<int> q{[] {
    const char* s = std::getenv("EMU_PORT_QUIRKS");
    return s ? std::atoi(s) : 0;
  }()};
  return q;
}

int fail(int e) {
  errno = e;
  return -1;
}

// Whether the number still names an epoll instance of the emulator: the doorbell is registered
// there. (The modification queues one spurious wake-up, which the next harvest takes.)
bool ownsEpoll(Port& p) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ev.data.u64 = tag(Kind::wake, 0, 0);
  return ::epoll_ctl(p.fd, EPOLL_CTL_MOD, p.doorbell, &ev) == 0;
}

// The port behind a descriptor, or nullptr with *err = EBADF (no descriptor) or EBADFD.
std::shared_ptr<Port> findPort(int fd, int* err) {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  if (auto it = r.ports.find(fd); it != r.ports.end()) {
    if (it->second->pid == ::getpid() && ownsEpoll(*it->second)) return it->second;
    r.ports.erase(it);
  }
  *err = ::fcntl(fd, F_GETFD) == -1 ? EBADF : EBADFD;
  return nullptr;
}

// Something was queued or alert mode changed: wake the waiters.
void kick(Port& p) {
  p.changed.notify_all();
  if (p.polling && !p.wakePending) {
    const uint64_t one = 1;
    if (::write(p.doorbell, &one, sizeof one) == sizeof one) p.wakePending = true;
  }
}

void queue(Port& p, int source, uintptr_t object, int events, void* user, uint32_t gen) {
  port_event_t ev{};
  ev.portev_events = events;
  ev.portev_source = ushort_t(source);
  ev.portev_object = object;
  ev.portev_user = user;
  p.done.push_back({ev, gen});
  kick(p);
}

void unqueue(Port& p, int source, uintptr_t object) {
  std::erase_if(p.done, [&](const Queued& q) {
    return q.ev.portev_source == source && q.ev.portev_object == object;
  });
}

// Registers (or re-arms) the fd in the epoll set for one event.
int arm(Port& p, int fd, const Association& a) {
  epoll_event ev{};
  ev.events = uint32_t(a.events & kPollable) | EPOLLONESHOT;
  ev.data.u64 = tag(Kind::fd, a.gen, uint32_t(fd));
  if (::epoll_ctl(p.fd, EPOLL_CTL_MOD, fd, &ev) == 0) return 0;
  if (errno == ENOENT && ::epoll_ctl(p.fd, EPOLL_CTL_ADD, fd, &ev) == 0) return 0;
  // epoll refuses regular files; poll(2) finds them always ready, so this association asked only
  // for bits they never report and never fires (difference e).
  return errno == EPERM ? 0 : errno;
}

// Whether fd still names the file the association was made with.
bool sameFile(int fd, const Association& a) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 && st.st_dev == a.dev && st.st_ino == a.ino;
}

// Moves what epoll reported into the port's queue.
void ingest(Port& p, const epoll_event* evs, int n) {
  for (int i = 0; i < n; ++i) {
    const uint64_t t = evs[i].data.u64;
    const auto kind = Kind(t >> 62);
    const uint32_t gen = uint32_t(t >> 32) & kGenMask;
    const auto object = int(uint32_t(t));
    if (kind == Kind::wake) continue; // the doorbell: it only makes the waiter look again
    if (kind == Kind::fd) {
      auto it = p.fds.find(object);
      if (it == p.fds.end() || it->second.gen != gen || it->second.queued) continue; // stale
      Association& a = it->second;
      const int revents = int(evs[i].events) & (a.events | kAlways);
      if (revents == 0) {
        arm(p, object, a); // only bits not asked for (e.g. POLLRDHUP): wait on
        continue;
      }
      a.queued = true;
      queue(p, PORT_SOURCE_FD, uintptr_t(object), revents, a.user, a.gen);
    } else {
      auto it = p.timers.find(object);
      if (it == p.timers.end() || it->second.gen != gen) continue; // deleted
      PortTimer& tm = it->second;
      uint64_t expirations = 0;
      if (::read(tm.tfd, &expirations, sizeof expirations) != sizeof expirations) continue;
      tm.pending += expirations;
      if (!tm.queued) {
        tm.queued = true;
        queue(p, PORT_SOURCE_TIMER, uintptr_t(object), 0, tm.user, tm.gen);
      }
    }
  }
}

// Collects, without waiting, what epoll has ready (unless a thread is in epoll_wait: it will).
void harvest(Port& p) {
  if (p.polling) return;
  epoll_event evs[64];
  int n;
  do {
    n = ::epoll_wait(p.fd, evs, 64, 0);
    if (n > 0) ingest(p, evs, n);
  } while (n == 64);
}

// Drops queued fd events whose fd was closed, or now names another file (4.).
void dropClosed(Port& p) {
  std::erase_if(p.done, [&](const Queued& q) {
    if (q.ev.portev_source != PORT_SOURCE_FD) return false;
    const int fd = int(q.ev.portev_object);
    auto it = p.fds.find(fd);
    if (it != p.fds.end() && it->second.gen == q.gen && sameFile(fd, it->second)) return false;
    if (it != p.fds.end() && it->second.gen == q.gen) p.fds.erase(it);
    return true;
  });
}

// Hands out up to max queued events; each retrieved fd event ends its association (2.).
uint_t take(Port& p, port_event_t* list, uint_t max) {
  uint_t got = 0;
  while (got < max && !p.done.empty()) {
    Queued q = p.done.front();
    p.done.pop_front();
    if (q.ev.portev_source == PORT_SOURCE_FD) {
      p.fds.erase(int(q.ev.portev_object));
    } else if (q.ev.portev_source == PORT_SOURCE_TIMER) {
      auto it = p.timers.find(int(q.ev.portev_object));
      if (it == p.timers.end() || it->second.gen != q.gen) continue;
      PortTimer& tm = it->second;
      uint64_t more = 0;
      if (::read(tm.tfd, &more, sizeof more) == sizeof more) tm.pending += more;
      q.ev.portev_events = int(std::min<uint64_t>(tm.pending, INT_MAX));
      tm.pending = 0;
      tm.queued = false;
    } else if (q.ev.portev_source == PORT_SOURCE_USER) {
      --p.userQueued;
    }
    list[got++] = q.ev;
  }
  return got;
}

port_event_t alertEvent(const Port& p) {
  port_event_t ev{};
  ev.portev_events = p.alertEvents;
  ev.portev_source = PORT_SOURCE_ALERT;
  ev.portev_user = p.alertUser;
  return ev;
}

int untilMs(Clock::time_point deadline) {
  const auto left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return int(std::min<decltype(ms)>(ms, INT_MAX));
}

enum class Wait { ok, expired, interrupted };

// port_getn's wait for `want` queued events (or alert mode, or the deadline). One thread at a time
// waits in epoll_wait without the mutex; the others wait on the condition variable.
Wait waitFor(Port& p, std::unique_lock<std::mutex>& lk, uint_t want, bool forever, bool zero,
             Clock::time_point deadline, int* err) {
  for (;;) {
    harvest(p);
    if (p.alert) return Wait::ok;
    dropClosed(p);
    if (p.done.size() >= want || zero) return Wait::ok;
    if (!forever && Clock::now() >= deadline) return Wait::expired;
    if (p.polling) {
      if (forever)
        p.changed.wait(lk);
      else
        p.changed.wait_until(lk, deadline);
      continue;
    }
    p.polling = true;
    lk.unlock();
    epoll_event evs[64];
    const int n = ::epoll_wait(p.fd, evs, 64, forever ? -1 : untilMs(deadline));
    const int e = errno;
    lk.lock();
    p.polling = false;
    p.wakePending = false;
    p.changed.notify_all(); // another waiter may take over epoll_wait
    if (n > 0) ingest(p, evs, n);
    if (n < 0 && e == EINTR) return Wait::interrupted;
    if (n < 0) {
      *err = e;
      return Wait::interrupted;
    }
  }
}

// The part of port_getn after argument checks; port_get passes one = true (PORT_GET).
int getn(int port, port_event_t* list, uint_t max, uint_t* nget, const timespec_t* timeout,
         bool one) {
  if (timeout && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000))
    return fail(EINVAL);
  int err = 0;
  auto p = findPort(port, &err);
  if (!p) return fail(err);
  std::unique_lock lk(p->mu);
  if (max == 0) {
    harvest(*p);
    dropClosed(*p);
    *nget = uint_t(p->done.size());
    return 0;
  }
  if (list == nullptr) return fail(EFAULT);
  const uint_t want = *nget;
  if (want == 0) return 0;
  // Beyond about 30 years a deadline would overflow the clock: that is waiting forever.
  const bool forever = timeout == nullptr || timeout->tv_sec > 1000000000;
  const bool zero = timeout && timeout->tv_sec == 0 && timeout->tv_nsec == 0;
  const auto deadline = forever ? Clock::time_point::max()
                                : Clock::now() + std::chrono::seconds(timeout->tv_sec) +
                                      std::chrono::nanoseconds(timeout->tv_nsec);
  const Wait w = waitFor(*p, lk, want, forever, zero, deadline, &err);
  if (w == Wait::interrupted) return fail(err ? err : EINTR);
  if (p->alert) {
    list[0] = alertEvent(*p);
    *nget = 1;
    return 0;
  }
  const int q = quirks().load();
  if (w == Wait::expired && one) return fail(ETIME);
  const uint_t got = take(*p, list, max);
  if (w == Wait::expired) {
    if (got > 0 || !(q & EMU_PORT_QUIRK_NGET_NOT_UPDATED)) *nget = got;
    return fail(ETIME);
  }
  *nget = got;
  if (got > 0 && timeout && (q & EMU_PORT_QUIRK_ETIME_WITH_EVENTS)) return fail(ETIME);
  return 0;
}

} // namespace

extern "C" {

int port_create(void) {
  const int ep = ::epoll_create1(0); // illumos ports are not close-on-exec either
  if (ep < 0) return -1;
  auto p = std::make_shared<Port>();
  p->fd = ep;
  p->pid = ::getpid();
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  if (r.doorbell < 0) r.doorbell = ::eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);
  p->doorbell = r.doorbell;
  p->maxEvents = r.maxEvents;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ev.data.u64 = tag(Kind::wake, 0, 0);
  if (r.doorbell < 0 || ::epoll_ctl(ep, EPOLL_CTL_ADD, r.doorbell, &ev) < 0) {
    const int e = errno;
    ::close(ep);
    return fail(e);
  }
  // Forget ports that were closed since (1.).
  std::erase_if(r.ports, [](const auto& kv) {
    return kv.second->pid != ::getpid() || !ownsEpoll(*kv.second);
  });
  r.ports[ep] = std::move(p);
  return ep;
}

int port_associate(int port, int source, uintptr_t object, int events, void* user) {
  if (source == PORT_SOURCE_FILE) return fail(ENOTSUP);
  if (source != PORT_SOURCE_FD) return fail(EINVAL);
  int err = 0;
  auto p = findPort(port, &err);
  if (!p) return fail(err);
  if (object > uintptr_t(INT_MAX)) return fail(EBADFD);
  const int fd = int(object);
  struct stat st {};
  if (::fstat(fd, &st) < 0) return fail(EBADFD);
  std::lock_guard lk(p->mu);
  Association& a = p->fds[fd];
  if (a.queued) unqueue(*p, PORT_SOURCE_FD, object); // replaced: re-evaluated below
  a = Association{events, user, st.st_dev, st.st_ino, p->newGen(), false};
  pollfd pfd{fd, short(a.events & kPollable), 0};
  const int revents = ::poll(&pfd, 1, 0) > 0 ? pfd.revents & (a.events | kAlways) : 0;
  if (revents != 0) {
    a.queued = true;
    queue(*p, PORT_SOURCE_FD, object, revents, a.user, a.gen);
    return 0;
  }
  if (const int e = arm(*p, fd, a); e != 0) {
    p->fds.erase(fd);
    return fail(e);
  }
  return 0;
}

int port_dissociate(int port, int source, uintptr_t object) {
  if (source != PORT_SOURCE_FD) return fail(source == PORT_SOURCE_FILE ? ENOENT : EINVAL);
  int err = 0;
  auto p = findPort(port, &err);
  if (!p) return fail(err);
  if (object > uintptr_t(INT_MAX)) return fail(EBADFD);
  const int fd = int(object);
  std::lock_guard lk(p->mu);
  auto it = p->fds.find(fd);
  struct stat st {};
  if (::fstat(fd, &st) < 0) {
    if (it != p->fds.end()) { // closed while associated: the association is gone (4.)
      unqueue(*p, PORT_SOURCE_FD, object);
      p->fds.erase(it);
    }
    return fail(EBADFD);
  }
  if (it == p->fds.end()) return fail(ENOENT);
  const bool same = st.st_dev == it->second.dev && st.st_ino == it->second.ino;
  if (it->second.queued)
    unqueue(*p, PORT_SOURCE_FD, object);
  else if (same)
    ::epoll_ctl(p->fd, EPOLL_CTL_DEL, fd, nullptr);
  p->fds.erase(it);
  return same ? 0 : fail(ENOENT);
}

int port_getn(int port, port_event_t list[], uint_t max, uint_t* nget, const timespec_t* timeout) {
  if (nget == nullptr) return fail(EINVAL);
  if (max > 0 && *nget > max) return fail(EINVAL);
  return getn(port, list, max, nget, timeout, false);
}

int port_get(int port, port_event_t* pe, const timespec_t* timeout) {
  uint_t nget = 1;
  return getn(port, pe, 1, &nget, timeout, true);
}

int port_send(int port, int events, void* user) {
  int err = 0;
  auto p = findPort(port, &err);
  if (!p) return fail(err);
  std::lock_guard lk(p->mu);
  if (p->userQueued >= p->maxEvents) return fail(EAGAIN);
  ++p->userQueued;
  queue(*p, PORT_SOURCE_USER, 0, events, user, 0);
  return 0;
}

int port_sendn(int ports[], int errors[], uint_t nent, int events, void* user) {
  if (nent == 0) return fail(EINVAL);
  if (ports == nullptr || errors == nullptr) return fail(EFAULT);
  int sent = 0;
  for (uint_t i = 0; i < nent; ++i) {
    errors[i] = port_send(ports[i], events, user) == 0 ? 0 : errno;
    sent += errors[i] == 0;
  }
  return sent;
}

int port_alert(int port, int flags, int events, void* user) {
  int err = 0;
  auto p = findPort(port, &err);
  if (!p) return fail(err);
  std::lock_guard lk(p->mu);
  if (events == 0) {
    p->alert = false;
    kick(*p);
    return 0;
  }
  if ((flags & PORT_ALERT_INVALID) == PORT_ALERT_INVALID) return fail(EINVAL);
  if (flags == PORT_ALERT_UPDATE && p->alert) return fail(EBUSY);
  p->alert = true;
  p->alertEvents = events;
  p->alertUser = user;
  kick(*p);
  return 0;
}

int emu_timer_create(clockid_t clock, struct sigevent* sev, timer_t* id) {
  if (id == nullptr) return fail(EFAULT);
  Registry& r = registry();
  TimerSlot slot;
  slot.used = true;
  std::shared_ptr<Port> p;
  void* user = nullptr;
  if (sev == nullptr || sev->sigev_notify != SIGEV_PORT) {
    if (::timer_create(clock, sev, &slot.real) < 0) return -1;
    slot.forwarded = true;
  } else {
    const auto* pn = static_cast<const port_notify_t*>(sev->sigev_value.sival_ptr);
    if (pn == nullptr) return fail(EFAULT);
    int err = 0;
    p = findPort(pn->portnfy_port, &err);
    if (!p) return fail(err);
    user = pn->portnfy_user;
    slot.tfd = ::timerfd_create(clock, TFD_NONBLOCK | TFD_CLOEXEC);
    if (slot.tfd < 0) return -1; // EINVAL for a clock timerfd does not offer
    slot.port = p;
  }
  std::lock_guard lk(r.mu);
  size_t i = 0;
  while (i < r.timers.size() && r.timers[i].used)
    ++i;
  if (i == r.timers.size()) r.timers.emplace_back();
  if (p) {
    r.timerGen = (r.timerGen + 1) & kGenMask;
    slot.gen = r.timerGen;
    std::lock_guard plk(p->mu);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag(Kind::timer, slot.gen, uint32_t(i));
    if (::epoll_ctl(p->fd, EPOLL_CTL_ADD, slot.tfd, &ev) < 0) {
      const int e = errno;
      ::close(slot.tfd);
      return fail(e);
    }
    p->timers[int(i)] = PortTimer{slot.tfd, user, slot.gen, 0, false};
  }
  r.timers[i] = slot;
  *id = reinterpret_cast<timer_t>(static_cast<intptr_t>(i));
  return 0;
}

int emu_timer_settime(timer_t id, int flags, const struct itimerspec* value,
                      struct itimerspec* old) {
  if (value == nullptr) return fail(EFAULT);
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  const auto i = size_t(reinterpret_cast<intptr_t>(id));
  if (i >= r.timers.size() || !r.timers[i].used) return fail(EINVAL);
  const TimerSlot& s = r.timers[i];
  if (s.forwarded) return ::timer_settime(s.real, flags, value, old);
  return ::timerfd_settime(s.tfd, (flags & TIMER_ABSTIME) ? TFD_TIMER_ABSTIME : 0, value, old);
}

int emu_timer_gettime(timer_t id, struct itimerspec* value) {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  const auto i = size_t(reinterpret_cast<intptr_t>(id));
  if (i >= r.timers.size() || !r.timers[i].used) return fail(EINVAL);
  const TimerSlot& s = r.timers[i];
  return s.forwarded ? ::timer_gettime(s.real, value) : ::timerfd_gettime(s.tfd, value);
}

int emu_timer_getoverrun(timer_t id) {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  const auto i = size_t(reinterpret_cast<intptr_t>(id));
  if (i >= r.timers.size() || !r.timers[i].used) return fail(EINVAL);
  const TimerSlot& s = r.timers[i];
  return s.forwarded ? ::timer_getoverrun(s.real) : 0; // illumos: overruns are in portev_events
}

int emu_timer_delete(timer_t id) {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  const auto i = size_t(reinterpret_cast<intptr_t>(id));
  if (i >= r.timers.size() || !r.timers[i].used) return fail(EINVAL);
  TimerSlot s = r.timers[i];
  r.timers[i] = TimerSlot{};
  if (s.forwarded) return ::timer_delete(s.real);
  if (auto p = s.port.lock()) {
    std::lock_guard plk(p->mu);
    auto it = p->timers.find(int(i));
    if (it != p->timers.end() && it->second.gen == s.gen) {
      if (it->second.queued) unqueue(*p, PORT_SOURCE_TIMER, i); // port_remove_done_event
      p->timers.erase(it);
    }
  }
  ::close(s.tfd); // leaves the epoll set with it
  return 0;
}

int emu_port_quirks(int flags) {
  return quirks().exchange(flags);
}

int emu_port_max_events(int limit) {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  const int old = r.maxEvents;
  r.maxEvents = limit;
  return old;
}

} // extern "C"
