// Selector over event ports (illumos, Solaris): the kernel side of the dispatcher drawing. Nim has
// no event ports selector (its selectors.nim falls back to poll on Solaris); this one follows its
// ioselectors interface as the epoll and poll selectors do.
//
// What is hard about event ports, and where this file deals with it:
//  1. A PORT_SOURCE_FD association is one-shot: once its event is retrieved the fd is no longer
//     associated (port_associate(3C)), and nothing more is reported until it is associated again.
//     Re-associating at once would report the same readiness again before the callbacks had run,
//     so the selector keeps the fds the last selectInto delivered (pendingFDs) and re-associates
//     them, with the interest they have by then, at the start of the next selectInto, before the
//     wait (as Redis's ae_evport.c and libuv's sunos.c do). The invariant:
//         every fd whose interest is not empty is EITHER associated with the port, with exactly
//         that interest, OR pending re-association.
//     So updateHandle on an associated fd re-associates it (port_associate replaces the mask, it
//     does not OR it in), on a pending one it only edits the interest that will be used; an
//     interest gone empty dissociates (ENOENT, "not associated", is normal there) or, when
//     pending, is skipped; unregister takes the fd out of both states.
//  2. portev_events may hold POLLHUP and POLLERR though not asked for, so an fd with nothing armed
//     is not associated (see 1). A hang-up may come with unread data (POLLIN|POLLHUP): the key
//     reports Read and Error, and the read callbacks drain the data before the end of stream.
//  3. port_getn(port, list, max, &nget, timeout) waits until *nget events are queued (nget = 1
//     here) and retrieves up to max (64, as Nim's array); on return *nget holds how many. A
//     timeout that expires is -1 with ETIME, yet events may have been retrieved (the man page);
//     kernels before illumos OS-7991 also said ETIME when events came in time, and some left
//     *nget as it was when none did (libuv's "kernel bug where nfds is not updated"). So the
//     count is always *nget, never the return value, and after ETIME or EINTR it counts only
//     when list[0] was written: portev_source is set to 0, which no source has, before the call.
//  4. portev_user names a number, not a registration: a callback early in a batch may close a
//     descriptor with an event later in it, and the next socket takes its number (libuv's
//     tcp_close_accept; redis#4877). So each registration gets a new generation, carried in
//     portev_user beside the fd (LP64: 32 bits each): selectInto drops an earlier
//     registration's event, and isCurrent tells the loop whether the number was registered
//     again since the batch was taken.
//  5. Timers are POSIX timers that notify the port: timer_create(CLOCK_MONOTONIC) with
//     SIGEV_PORT, then timer_settime, periodic or oneshot (timer_create(3C)). An expiration is a
//     PORT_SOURCE_TIMER event carrying the key's portev_user; further expirations before it is
//     retrieved are counted in portev_events, not queued, so a late periodic key is reported
//     once. A timer has no descriptor, yet its key needs a number no socket can take while it
//     lives: as the poll selector does, it reserves one (/dev/null, close-on-exec). A oneshot
//     timer that fired is Finished and no longer counts; unregister deletes the timer.
//  6. There are no signals in event ports: the process-wide handler writes to a self-pipe
//     (platform/posix/signals.hpp) whose read end is associated with the port like any fd (and
//     re-associated at once after each delivery, once drained); a watched signal stays blocked
//     in this thread except during port_getn. Signal keys have reserved numbers (see 5), are
//     marked due when the pipe says so, and are reported once per wait (standard signals coalesce).
//  7. There are no process exits in event ports: SIGCHLD is watched like a signal, and on each
//     one every waiting child is checked without reaping (platform/posix/children.hpp).
//  8. A user event is a non-blocking self-pipe, not port_send: port_send queues one event per
//     call (a wake flag would be ours to keep) and targets one port, which another thread cannot
//     know to be still open; a pipe lives exactly as long as its SelectEvent, coalesces by itself
//     (a full pipe is triggered already), keeps a trigger made before registerEvent (associating
//     a readable pipe queues its event at once), and serves several selectors. Its read end is the
//     key's number; selectInto empties it, reports the key once, and it is pending like any fd.
//  9. port_create's descriptor is not close-on-exec on illumos: the constructor sets FD_CLOEXEC.
// 10. A forked child gets a copy of portFD but not the port's events, nor the POSIX timers (a
//     timer id there may already be the child's own): forgetAfterFork closes the copy and the
//     keys' descriptors, deletes no timer, and gives back the signals (as libuv's uv__io_fork).
#pragma once

#include <port.h>
#include <time.h> // timer_t

#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "../../include/asyncdispatch/selector.hpp"
#include "../posix/children.hpp"
#include "../posix/descriptors.hpp"
#include "../posix/signals.hpp"

namespace asyncdispatch {

// Nim's SelectEvent over a pipe (see 8): the constructor is newSelectEvent.
class SelectEvent {
public:
  SelectEvent();
  SelectEvent(const SelectEvent&) = delete;
  SelectEvent& operator=(const SelectEvent&) = delete;

  void trigger() const;
  void close();
  SocketHandle getFd() const { return rfd.get(); }

  UniqueFd rfd; // the read end, which the selector associates; -1 once closed
  UniqueFd wfd; // the write end, which trigger writes
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
  // Beyond Nim (see 4): whether key, from the last selectInto, is of key.fd's registration now.
  bool isCurrent(const ReadyKey& key) const;
  // In a forked child (see 10): every key forgotten, the parent's kernel state untouched.
  void forgetAfterFork() noexcept;
  void dump(std::ostream& os) const;

  // One descriptor's slot: the drawing's SelectorKey, and what the kernel side needs of it.
  struct Slot : SelectorKey<T> {
    int associated = 0;           // the poll(2) mask the port holds for it, 0 if none (see 1)
    bool pending = false;         // delivered by the last selectInto, to re-associate (see 1)
    bool due = false;             // a signal or process key to report (in dueKeys)
    int param = 0;                // Nim's SelectorKey.param: the signal or the pid
    timer_t timer{};              // a timer key's POSIX timer (see 5)
    std::uint32_t generation = 0; // of its current registration (see 4)
    std::uint32_t reported = 0;   // the generation the last selectInto reported it under
  };

  int portFD = -1;         // owned: closed by the destructor
  port_event_t events[64]; // filled by port_getn; 64 as in Nim
  std::vector<Slot> fds;   // indexed by descriptor; a free slot has fd == InvalidIdent
  int count = 0;           // armed registrations: keys whose event set is not empty

private:
  Slot& checkedKey(const char* op, SocketHandle fd);
  void* cookieOf(SocketHandle fd) const;
  Slot& freeSlot(const char* op, SocketHandle fd);
  void addKey(Slot& slot, SocketHandle fd, EventSet events, T data, int param);
  void associate(Slot& slot, const char* op);
  void reassociatePending();
  void syncSignalPipe();
  void markDue(SocketHandle fd);
  void watchChildren(const std::string& at);
  void stopWatchingChildren() noexcept;
  void collectSignals();
  int retrieve(int timeout, int capacity, bool& interrupted);

  std::vector<SocketHandle> pendingFDs; // see 1; a slot no longer pending is skipped
  std::vector<SocketHandle> dueKeys;    // signal and process keys waiting to be reported
  SignalPipe signals;                   // see 6
  int signalFD = -1;                    // the signal pipe's read end while associated, or -1
  std::vector<SocketHandle> signalKeys;
  ChildWaits children; // see 7
  bool childrenWatched = false;
};

extern template class Selector<PData>;

} // namespace asyncdispatch
