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
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <ostream>
#include <span>
#include <vector>

#include "../../include/asyncdispatch/selector.hpp"

namespace asyncdispatch {

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
  int selectInto(int timeout, std::span<ReadyKey> results);
  bool contains(SocketHandle fd) const;
  T& getData(SocketHandle fd);
  void dump(std::ostream& os) const;

  int epollFD = -1;                // owned: closed by the destructor
  epoll_event events[64];          // filled by epoll_wait; 64 as in Nim
  std::vector<SelectorKey<T>> fds; // indexed by descriptor; a free slot has fd == InvalidIdent
  int count = 0;                   // armed registrations: keys whose event set is not empty

private:
  SelectorKey<T>& checkedKey(const char* op, SocketHandle fd);

  std::vector<std::uint32_t> armed; // per fd, the interest the kernel holds (see 6 above)
};

extern template class Selector<PData>;

} // namespace asyncdispatch
