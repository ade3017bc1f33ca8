// Selector over poll(2): Nim's ioselectors_poll, the kernel side of the dispatcher drawing on any
// POSIX system without a native backend. The simplest selector of the project: read it first.
//
// What is hard about poll(2), and where this file deals with it:
//  1. The kernel keeps nothing between calls: each poll(2) is handed the whole interest list.
//     The selector keeps that list, pollFDs, one pollfd per armed descriptor, and each key keeps
//     its index into it (Slot::pollIndex). An interest change edits one entry in place, appends
//     one, or moves the last one into a freed place (pollAdd, pollUpdate, pollRemove): the array
//     is never rebuilt, and a pass in the steady state makes no change to it at all.
//  2. POLLHUP, POLLERR and POLLNVAL are reported whatever `events` asks for. So a descriptor with
//     nothing armed is not in pollFDs (a hang-up nobody reads cannot spin the loop), and one that
//     reports POLLNVAL (closed behind the selector's back) is reported once as an Error (EBADF)
//     and its entry silenced, fd replaced by ~fd, which poll(2) ignores as any negative fd,
//     until it is unregistered.
//  3. A hang-up may come with unread data (POLLIN|POLLHUP): the key reports Read and Error, and
//     the read callbacks drain the data before they see the end of stream.
//  4. poll(2) takes whole milliseconds (the loop rounds up) and fails with EINTR when a signal
//     handler runs: then no revents are valid, but the signal pipe is read anyway.
//  5. There are no timers in the kernel: registerTimer keeps {deadline, period, key} in
//     timerKeys, folds the nearest deadline into the poll timeout (rounded up, so never early)
//     and fires what is due after the wait. A oneshot timer reports Finished and is disarmed.
//  6. There are no signals in the kernel: a process-wide handler writes to a self-pipe
//     (platform/posix/signals.hpp), and a watched signal stays blocked in this thread except
//     during poll(2); one delivered between the unblock and the wait is in the pipe already, so
//     the wait returns at once. Standard signals coalesce: the key is reported once per wait.
//  7. There are no process exits in the kernel: SIGCHLD is watched like a signal, and on each one
//     every waiting child is checked without reaping (platform/posix/children.hpp).
//  8. A timer, signal or process key has no descriptor of its own, yet its key must have a number
//     that no socket can take while it lives: as Nim's kqueue selector does, each reserves one
//     (/dev/null, close-on-exec), closed when the key is unregistered.
//  9. A user event is a non-blocking self-pipe: trigger() writes one byte from any thread (a full
//     pipe is triggered already), and selectInto empties it and reports the key once.
// 10. At most 64 keys are reported per call (the loop's array, as in Nim): the scan of pollFDs
//     starts where the last one stopped, so descriptors late in the array are not starved.
// 11. A callback early in a batch may close a descriptor with a report later in it, and the next
//     socket takes its number (libuv's tcp_close_accept; redis#4877): each registration gets a
//     new generation, and isCurrent tells the loop whether the number was registered again.
// 12. poll(2) keeps no state in the kernel, so what a forked child must forget is only what the
//     destructor closes: forgetAfterFork is the destructor's work, and the destructor calls it.
#pragma once

#include <poll.h>

#include <chrono>
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

// Nim's SelectEvent over a pipe (see 9): the constructor is newSelectEvent.
class SelectEvent {
public:
  SelectEvent();
  SelectEvent(const SelectEvent&) = delete;
  SelectEvent& operator=(const SelectEvent&) = delete;

  void trigger() const;
  void close();
  SocketHandle getFd() const { return rfd.get(); }

  UniqueFd rfd; // the read end, which the selector polls; -1 once closed
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
  // Beyond Nim (see 11): whether key, from the last selectInto, is of key.fd's registration now.
  bool isCurrent(const ReadyKey& key) const;
  // In a forked child (see 12): every key forgotten, the parent's kernel state untouched.
  void forgetAfterFork() noexcept;
  void dump(std::ostream& os) const;

  // One descriptor's slot: the drawing's SelectorKey, and what the selector needs of it.
  struct Slot : SelectorKey<T> {
    int pollIndex = -1;           // its entry in pollFDs, or -1 (see 1)
    int param = 0;                // Nim's SelectorKey.param: the signal or the pid
    bool due = false;             // a timer, signal or process key to report (in dueKeys)
    std::uint32_t generation = 0; // of its current registration (see 11)
    std::uint32_t reported = 0;   // the generation the last selectInto reported it under
  };

  std::vector<pollfd> pollFDs; // what poll(2) is handed: one entry per armed descriptor
  std::vector<Slot> fds;       // indexed by descriptor; a free slot has fd == InvalidIdent
  int count = 0;               // armed registrations: keys whose event set is not empty

private:
  using Clock = std::chrono::steady_clock;
  struct TimerKey {
    Clock::time_point deadline;
    Clock::duration period; // zero for a oneshot timer
    SocketHandle fd;
  };

  Slot& checkedKey(const char* op, SocketHandle fd);
  Slot& freeSlot(const char* op, SocketHandle fd);
  SocketHandle addReservedKey(const char* op, EventSet events, T data, int param);
  void pollAdd(int fd, short events);
  void pollUpdate(Slot& slot);
  void pollRemove(int index);
  int& ownerIndex(int index);
  void syncSignalPipe();
  void markDue(SocketHandle fd);
  void watchChildren(const std::string& at);
  void stopWatchingChildren() noexcept;
  int timeoutWithTimers(int timeout) const;
  void collectDue(bool interrupted);

  std::vector<TimerKey> timerKeys;   // see 5
  std::vector<SocketHandle> dueKeys; // timer, signal and process keys waiting to be reported
  SignalPipe signals;                // see 6
  int signalIndex = -1;              // the signal pipe's entry in pollFDs, or -1
  std::vector<SocketHandle> signalKeys;
  ChildWaits children; // see 7
  bool childrenWatched = false;
  std::size_t scanFrom = 0; // see 10
};

extern template class Selector<PData>;

} // namespace asyncdispatch
