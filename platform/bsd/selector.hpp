// Selector over kqueue (macOS, FreeBSD, OpenBSD, NetBSD, DragonFly): Nim's ioselectors_kqueue,
// the kernel side of the dispatcher drawing. Only what FreeBSD 12+ and macOS 11+ document.
//
// What is hard about kqueue, and where this file deals with it:
//  1. Interest is a knote per (ident, filter): a descriptor has a READ and a WRITE knote, added
//     and deleted apart. close(2) removes a descriptor's knotes (unlike epoll, by number), so a
//     later EV_DELETE gets EBADF (closed) or ENOENT (reused): both are expected and ignored.
//  2. kevent() takes a change list with the wait: interest changes are kept in `changes` and ride
//     on selectInto's one kevent(), so a pass in the steady state makes one system call. A list
//     that would not fit the event list (where errors come back) is flushed by its own kevent()
//     with EV_RECEIPT (flushChanges), which reports each change and collects no event.
//  3. A failed change comes back in the event list as EV_ERROR with the errno in `data` (flags
//     may carry other bits on macOS: test with &). EBADF and ENOENT mean the descriptor was closed
//     meanwhile (see 1); anything else is reported as an Error of that key, or thrown as OSError
//     when the key is gone. FreeBSD returns at once when a change failed, without collecting.
//  4. READ and WRITE are level-triggered. The kernel's interest (`armed`) widens at once, Write
//     narrows at once and Read lazily, when selectInto sees data nobody waits for (as epoll does:
//     no change per message). `count` and the keys' events keep Nim's meaning.
//  5. EV_EOF may come with data still readable: the key reports Read and Error, and the read
//     callbacks drain the data before they see the end of stream. `fflags` then holds the socket
//     error (a refused connect on WRITE, a reset on READ; 0 for a clean FIN): it is the key's
//     errorCode. SO_ERROR is never read here: the operation that runs next must see it.
//  6. EVFILT_TIMER, EVFILT_SIGNAL, EVFILT_PROC and EVFILT_USER have no descriptor, yet a key needs
//     a number no socket can take while it lives: each reserves one (/dev/null, close-on-exec),
//     closed on unregister (as Nim's kqueue selector and our poll backend do). Their changes are
//     applied at once, so an error is the registering call's own.
//  7. EVFILT_TIMER counts milliseconds by default (FreeBSD and macOS alike) and is periodic unless
//     EV_ONESHOT; a oneshot timer that fired is deleted by the kernel and reported Finished.
//  8. EVFILT_SIGNAL records a signal even when its disposition is SIG_IGN, and needs no blocking:
//     while watched a signal is set to SIG_IGN (so its default action cannot end the process)
//     and restored after the last watcher in the process (platform/posix/signals.hpp, 8), as
//     libuv and Nim do. SIGCHLD is left alone: ignoring it would reap every child. The thread's
//     table refuses a second watcher.
//  9. EVFILT_PROC fires once with NOTE_EXIT and deletes itself. A child that exited before the
//     registration is a zombie: FreeBSD fires at once, macOS may answer ESRCH, and then the key
//     is reported Finished at the next selectInto (dueKeys). Nothing here reaps.
// 10. EVFILT_USER (ident = the SelectEvent's number, EV_CLEAR) is triggered with NOTE_TRIGGER on
//     the kq it is registered with, from any thread: the SelectEvent knows its kq, and a trigger
//     while it has none is kept (pending) and sent at registration. Where EVFILT_USER is missing
//     (older OpenBSD, NetBSD < 10) a SelectEvent is a self-pipe watched with EVFILT_READ.
// 11. udata names a registration: each gets a new generation, carried in udata beside the fd (the
//     low half of a pointer: fd, the high half: generation), so an event of a descriptor closed
//     and reused within one batch never reaches the new owner (libuv's tcp_close_accept;
//     redis#4877), and isCurrent tells the loop whether the number was registered again.
// 12. A kq is not inherited across fork: in the child its number is free, or already the child's
//     own file. forgetAfterFork leaves kqFD unclosed (as libuv's uv__io_fork does), closes the
//     keys' reserved descriptors, and puts the signals' dispositions and mask back.
#pragma once

#include <sys/types.h>
#include <sys/event.h>

#include <atomic>
#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "../../include/asyncdispatch/selector.hpp"
#include "../posix/descriptors.hpp"

namespace asyncdispatch {

// Nim's SelectEvent over EVFILT_USER (see 10): the constructor is newSelectEvent.
class SelectEvent {
public:
  SelectEvent();
  SelectEvent(const SelectEvent&) = delete;
  SelectEvent& operator=(const SelectEvent&) = delete;

  void trigger() const;
  void close();
#ifdef EVFILT_USER
  SocketHandle getFd() const {
    return number.get();
  }

  UniqueFd number;                          // reserved (see 6): the ident and the key's number
  std::atomic<int> kq{-1};                  // the kq it is registered with, or -1
  std::atomic<void*> udata{nullptr};        // its key's udata there (see 11)
  mutable std::atomic<bool> pending{false}; // triggered while it had no kq
#else
  SocketHandle getFd() const {
    return rfd.get();
  }

  UniqueFd rfd; // the read end, watched with EVFILT_READ; -1 once closed
  UniqueFd wfd; // the write end, which trigger writes
#endif
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

  // One descriptor's slot: the drawing's SelectorKey, and what the kernel side needs of it.
  struct Slot : SelectorKey<T> {
    unsigned armed = 0;           // the knotes the kernel holds: kArmRead | kArmWrite (see 4)
    int param = 0;                // Nim's SelectorKey.param: the signal or the pid
    SelectEvent* event = nullptr; // a User key's event, told when the kq goes away
    std::uint32_t generation = 0; // of its current registration (see 11)
    std::uint32_t reported = 0;   // the generation the last selectInto reported it under
  };

  int kqFD = -1;            // owned: closed by the destructor
  struct kevent events[64]; // filled by kevent(); 64 as in Nim
  std::vector<Slot> fds;    // indexed by descriptor; a free slot has fd == InvalidIdent
  int count = 0;            // armed registrations: keys whose event set is not empty

private:
  Slot& checkedKey(const char* op, SocketHandle fd);
  Slot& freeSlot(const char* op, SocketHandle fd);
  void* tagOf(SocketHandle fd) const;
  void change(SocketHandle fd, short filter, unsigned short flags);
  void flushChanges();
  int changeFailed(const struct kevent& ev);
  SocketHandle addReservedKey(const std::string& at, EventSet events, T data, int param,
                              struct kevent kev);
  void finish(Slot& slot);

  // A report owed to the next selectInto: a process gone before its knote was added (errorCode
  // 0, see 9) or a change a flush saw fail (see 2); dropped if its registration is gone.
  struct Due {
    SocketHandle fd;
    std::uint32_t generation;
    int errorCode;
  };

  struct kevent changes[64]; // interest changes for the next kevent() (see 2)
  int nchanges = 0;
  std::vector<Due> dueReports;
};

extern template class Selector<PData>;

} // namespace asyncdispatch
