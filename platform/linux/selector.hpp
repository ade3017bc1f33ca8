// Selector over epoll (Linux): Nim's ioselectors_epoll, the kernel side of the dispatcher drawing.
//
// What is hard about epoll, and where this file deals with it:
//  1. epoll registers the open file description, not the number: a dup of a closed fd keeps the
//     registration alive. So unregister always does EPOLL_CTL_DEL, before closeSocket closes.
//  2. EPOLLERR and EPOLLHUP are reported whatever the interest set, so a descriptor with nothing
//     armed leaves the epoll set (updateHandle): a reset nobody reads cannot spin the loop.
//  3. A hang-up may come with unread data (EPOLLIN|EPOLLHUP): the key reports Read and Error, and
//     the read callbacks drain the data before they see the end of stream.
//  4. epoll_wait takes whole milliseconds (the loop rounds up) and fails with EINTR when a signal
//     arrives: that is zero events, not an error.
//  5. epoll_ctl is a system call (Nim's selector makes up to four per request and response). So
//     the kernel's interest (`armed`) widens at once, Write narrows at once (a socket is nearly
//     always writable) and Read lazily, when selectInto sees data nobody waits for. `count` and
//     the keys' events keep Nim's meaning: what the callbacks wait for.
//  6. A timerfd set to 0 is disarmed, not due, so registerTimer refuses a timeout <= 0; it runs on
//     CLOCK_MONOTONIC. Its counter must be read or it stays readable: selectInto reads it, and a
//     oneshot timer leaves the epoll set and is marked Finished, as in Nim's selector.
//  7. signalfd sees only blocked signals, and the mask is per thread (platform/posix/signals.hpp
//     keeps it, and refuses a second watcher, which would race the first); standard signals
//     coalesce, so selectInto drains the fd and reports the key once.
//  8. pidfd_open exists since Linux 5.3 (ENOSYS before; old seccomp profiles answer EPERM). The
//     fallback (platform/posix/children.hpp) notices SIGCHLD on a signalfd and writes the eventfd
//     key of each child found exited; one thread's dispatcher may wait for children at a time.
//     ASYNCDISPATCH_NO_PIDFD=1 in the environment forces it, for the tests.
//  9. eventfd adds every write to one counter, so triggers before a read coalesce, and write(2)
//     is safe from any thread. Of two dispatchers watching one event, the second to read gets
//     EAGAIN and reports nothing.
// 10. epoll_event.data names a number, not a registration: a callback early in a batch may close
//     a descriptor with an event later in it, and the next socket takes its number (libuv's
//     tcp_close_accept; redis#4877). So each registration gets a new generation, carried in
//     epoll_event.data beside the fd: selectInto drops an earlier registration's event, and
//     isCurrent tells the loop whether the number was registered again since the batch was taken.
// 11. A forked child shares the epoll instance, and so every registration on it, with its parent:
//     an EPOLL_CTL_DEL there removes the parent's. forgetAfterFork closes the child's copies
//     (epollFD, the keys' timerfds, signalfds, pidfds, the SIGCHLD signalfd) and calls nothing
//     else on them (libuv's uv__io_fork closes the epoll descriptor the same way).
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "../../include/asyncdispatch/selector.hpp"
#include "../posix/children.hpp"

namespace asyncdispatch {

// Nim's SelectEvent over an eventfd (see 9): the constructor is newSelectEvent.
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
  // Beyond Nim (see 10): whether key, from the last selectInto, is of key.fd's registration now.
  bool isCurrent(const ReadyKey& key) const;
  // In a forked child (see 11): every key forgotten, the parent's kernel state untouched.
  void forgetAfterFork() noexcept;
  void dump(std::ostream& os) const;

  // One descriptor's slot: the drawing's SelectorKey, and what the kernel side needs of it.
  struct Slot : SelectorKey<T> {
    std::uint32_t armed = 0;      // the interest the kernel holds (see 5)
    int param = 0;                // Nim's SelectorKey.param: the signal or the pid
    std::uint32_t generation = 0; // of its current registration (see 10)
    std::uint32_t reported = 0;   // the generation the last selectInto reported it under
  };

  int epollFD = -1;       // owned: closed by the destructor
  epoll_event events[64]; // filled by epoll_wait; 64 as in Nim
  std::vector<Slot> fds;  // indexed by descriptor; a free slot has fd == InvalidIdent
  int count = 0;          // armed registrations: keys whose event set is not empty

private:
  Slot& checkedKey(const char* op, SocketHandle fd);
  Slot& freeSlot(const char* op, SocketHandle fd);
  void addKernelObject(const char* op, int fd, EventSet events, T data, int param);
  void watchChildren(const std::string& at);
  void stopWatchingChildren() noexcept;
  std::uint64_t tagOf(SocketHandle fd) const;

  // The SIGCHLD fallback (see 8): its signalfd while a child is waited for, and the children.
  int sigchldFD = -1;
  ChildWaits children;
};

extern template class Selector<PData>;

} // namespace asyncdispatch
