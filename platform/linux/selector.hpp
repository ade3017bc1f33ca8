// Selector over epoll (Linux): Nim's ioselectors_epoll, the kernel side of the dispatcher drawing.
//
// What is hard about epoll, and where this file deals with it:
//  1. epoll registers the open file description, not the descriptor number: after close(fd) a
//     dup of fd (or a child holding it) keeps the registration alive and its events still arrive.
//     So unregister always does EPOLL_CTL_DEL, and closeSocket unregisters before it closes.
//  2. EPOLLERR and EPOLLHUP are reported whatever the interest set. A descriptor with nothing
//     armed is therefore taken out of the epoll set (updateHandle), so a reset connection that
//     nobody reads cannot wake the loop forever.
//  3. A hang-up may arrive together with unread data (EPOLLIN|EPOLLHUP): the key reports Read as
//     well as Error, and the read callbacks drain the data before they see the end of stream.
//  4. epoll_wait takes whole milliseconds; the portable loop rounds its timeout up before calling,
//     so a timer is never woken early.
//  5. epoll_wait fails with EINTR when a signal arrives; that is zero events, not an error.
//  6. epoll_ctl is a system call, and changing interest for every operation costs up to four of
//     them per request and response (what Nim's selector does). So the kernel's interest
//     (`armed`) is widened at once, but Read is narrowed lazily: only when selectInto sees data
//     nobody waits for any more (updateHandle, selectInto). Write is narrowed at once, since a
//     socket is nearly always writable. `count` and the keys' events keep Nim's meaning: what
//     the callbacks wait for.
//  7. A timerfd set to 0 is disarmed, not due, so registerTimer refuses a timeout <= 0; it runs on
//     CLOCK_MONOTONIC (a wall-clock change must not fire or stall it). Its expiration counter
//     must be read or it stays readable: selectInto reads it, and takes a oneshot timer out of
//     the epoll set and marks it Finished, as Nim's selector does (EPOLLONESHOT alone would
//     leave a dead registration behind).
//  8. signalfd sees only signals that are blocked, and the mask is per thread, inherited by fork
//     and kept across execve (a child must unblock before it execs). glibc reserves signals 32
//     and 33 and never blocks them; SIGKILL and SIGSTOP cannot be blocked; standard signals
//     coalesce, so selectInto drains the fd and reports the key once. Two signalfds for one
//     signal race for each delivery, so a thread watches each signal once: a per-thread table
//     (signalWatches) refuses a second watcher and puts the mask bit back as it found it.
//  9. pidfd_open exists since Linux 5.3 (ENOSYS before; old seccomp profiles answer EPERM). The
//     fallback watches SIGCHLD, which coalesces: one signal may stand for several children, so
//     on each one every waiting pid is checked with waitid(WEXITED|WNOHANG|WNOWAIT), which never
//     reaps. SIGCHLD is blocked before the first check, so an exit between the two is pending
//     rather than lost. A child found exited writes its key's eventfd, so a burst of exits is
//     reported 64 at a time by the kernel like any readiness (registerProcess, checkChildren).
//     A process has one SIGCHLD, so on the fallback one thread's dispatcher waits for children
//     (another thread's signalfd could take the signal first). ASYNCDISPATCH_NO_PIDFD=1 in the
//     environment forces the fallback, for the tests.
// 10. eventfd adds every write to one counter, so triggers before a read coalesce into one
//     report; write(2) on it is safe from any thread. Two dispatchers may watch one event: the
//     one that reads second gets EAGAIN and reports nothing (selectInto).
// 11. epoll_event.data says which descriptor number an event is for, not which registration: a
//     callback early in a pass may close a descriptor that has an event later in the same
//     batch, and the next socket, timer or event gets its number and registers (libuv's
//     tcp_close_accept; redis#4877). A dup'ed descriptor closed without EPOLL_CTL_DEL goes on
//     reporting under its old number as well (see 1). So each registration of a number gets a
//     new generation, carried in epoll_event.data next to the descriptor (fd in the low 32 bits,
//     generation in the high 32): selectInto drops an event of an earlier registration, and
//     isCurrent tells the loop, at dispatch, whether the number has been registered again since
//     the batch was taken. No system call is added: the tag rides on the epoll_ctl calls made
//     anyway.
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "../../include/asyncdispatch/selector.hpp"

namespace asyncdispatch {

// Nim's SelectEvent over an eventfd (see 10 above): the constructor is newSelectEvent, and the
// destructor closes what close() has not. trigger() is the one call safe from any thread.
class SelectEvent {
public:
  SelectEvent();
  ~SelectEvent();
  SelectEvent(const SelectEvent&) = delete;
  SelectEvent& operator=(const SelectEvent&) = delete;

  void trigger() const;
  void close();
  SocketHandle getFd() const { return efd; }

  int efd = -1; // owned; -1 once closed
};

template <class T>
class Selector {
public:
  Selector();
  ~Selector();
  Selector(const Selector&) = delete;
  Selector& operator=(const Selector&) = delete;

  void registerHandle(SocketHandle fd, EventSet events, T data);
  void updateHandle(SocketHandle fd, EventSet events);
  void unregister(SocketHandle fd);
  SocketHandle registerTimer(int timeout, bool oneshot, T data);
  SocketHandle registerSignal(int signal, T data);
  SocketHandle registerProcess(int pid, T data);
  void registerEvent(SelectEvent& ev, T data);
  void unregister(SelectEvent& ev);
  int selectInto(int timeout, std::span<ReadyKey> results);
  bool contains(SocketHandle fd) const;
  T& getData(SocketHandle fd);
  void dump(std::ostream& os) const;
  // Beyond Nim's interface (see 11): whether key, from the last selectInto, reports the
  // registration that holds key.fd now. The loop asks before it runs a key's callbacks.
  bool isCurrent(const ReadyKey& key) const;

  int epollFD = -1;                // owned: closed by the destructor
  epoll_event events[64];          // filled by epoll_wait; 64 as in Nim
  std::vector<SelectorKey<T>> fds; // indexed by descriptor; a free slot has fd == InvalidIdent
  int count = 0;                   // armed registrations: keys whose event set is not empty

private:
  SelectorKey<T>& checkedKey(const char* op, SocketHandle fd);
  void grow(SocketHandle fd);
  void addKernelObject(const char* op, int fd, EventSet events, T data, int param);
  void finish(SocketHandle fd);
  void watchChildren(const std::string& at);
  void stopWatchingChildren() noexcept;
  void checkChildren();
  std::uint64_t tagOf(SocketHandle fd) const;

  std::vector<std::uint32_t> armed; // per fd, the interest the kernel holds (see 6 above)
  std::vector<int> params;          // per fd, Nim's SelectorKey.param: the signal or the pid
  // Per fd (see 11): the generation of its current registration, and the one the last
  // selectInto reported it under.
  std::vector<std::uint32_t> generations;
  std::vector<std::uint32_t> reported;
  // The SIGCHLD fallback (see 9 above): its signalfd while a child is waited for, and the keys
  // (eventfds) of the children not yet found exited.
  int sigchldFD = -1;
  std::vector<SocketHandle> waitingChildren;
};

extern template class Selector<PData>;

} // namespace asyncdispatch
