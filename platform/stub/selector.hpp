// A backend for an OS that has none yet: it compiles anywhere and every function throws
// OSError(ENOSYS, "<function>: not supported on this OS"). A porter copies this file pair to
// platform/<os>/, keeps the functions in this order, and fills them in over the kernel's
// interface until the test suite passes (CONTRIBUTING.md, "Porting to a new OS").
//
// What is hard about the kernel interface goes here, as a numbered list, in a real backend.
#pragma once

#include <ostream>
#include <span>
#include <vector>

#include "../../include/asyncdispatch/selector.hpp"

namespace asyncdispatch {

// Nim's SelectEvent: a user event any thread can trigger (an eventfd on Linux, a pipe on the
// BSDs, port_send on illumos).
class SelectEvent {
public:
  SelectEvent();
  ~SelectEvent() = default;
  SelectEvent(const SelectEvent&) = delete;
  SelectEvent& operator=(const SelectEvent&) = delete;

  void trigger() const;
  void close();
  SocketHandle getFd() const { return efd; }

  int efd = -1; // the kernel object's handle
};

template <class T>
class Selector {
public:
  Selector();
  ~Selector() = default;
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
  bool isCurrent(const ReadyKey& key) const;
  // In a forked child: every key forgotten, the parent's kernel state untouched.
  void forgetAfterFork() noexcept;

  int kernelFD = -1;               // the kernel object's handle (epollFD, kqFD, portFD ...)
  std::vector<SelectorKey<T>> fds; // indexed by descriptor, as in the other backends
  int count = 0;                   // armed registrations
};

extern template class Selector<PData>;

} // namespace asyncdispatch
