// The backend contract of the readiness backends (epoll, kqueue, event ports): Nim's ioselectors
// interface for Selector<T>, written as a C++20 concept that every backend static_asserts.
// Backends translate kernel events into ReadyKeys and never run a callback: only the portable loop
// (src/poll.cpp, through the readiness family in platform/posix/) dispatches. docs/porting.md
// explains each function to a porter.
#pragma once

#include <concepts>
#include <ostream>
#include <span>
#include <utility>
#include <vector>

#include "types.hpp"

namespace asyncdispatch {

/// Nim's InvalidIdent: the fd of a free slot in the selector's table.
inline constexpr SocketHandle InvalidIdent = static_cast<SocketHandle>(-1);

/// Nim's PData (alias AsyncData): the callbacks waiting on one descriptor, in the order they were
/// added. The loop runs them until one returns false (see processReadyKey).
struct PData {
  AsyncFD fd{};                   ///< Nim's fd: the descriptor the callbacks wait on
  std::vector<Callback> readCBs;  ///< Nim's readCBs: run when fd is readable
  std::vector<Callback> writeCBs; ///< Nim's writeCBs: run when fd is writable
};
using AsyncData = PData; ///< Nim's AsyncData, PData's other name

/// Prints data as dumpDispatcher does: the drawing's `PData { fd, readCBs, writeCBs }`.
std::ostream& operator<<(std::ostream& os, const PData& data);

/// Nim's SelectorKey[T]: one registered descriptor, what it waits for and its data.
template <class T>
struct SelectorKey {
  SocketHandle fd = InvalidIdent; ///< Nim's ident: the descriptor, InvalidIdent in a free slot
  EventSet events;                ///< Nim's events: what the key waits for
  T data;                         ///< Nim's data: the user data, a PData for the dispatcher
};

/// Nim's ReadyKey: one event reported by selectInto. errorCode says what is known of an Error
/// event without consuming it: ECONNRESET for a hang-up, else 0. A backend never reads SO_ERROR:
/// that clears the error, and the operation that runs next (a pending connect) must see it.
struct ReadyKey {
  SocketHandle fd = InvalidIdent; ///< Nim's fd: the key's descriptor
  EventSet events;                ///< Nim's events: what happened
  int errorCode = 0;              ///< Nim's errorCode: ECONNRESET for a hang-up, else 0
};

/// Nim's Selector[T]; each backend defines it (`platform/<os>/selector.hpp`), holding its kernel
/// handle (epollFD, kqFD or portFD), events[64] of the native event record, and fds.
template <class T>
class Selector;

/// Nim's SelectEvent: a user event a Selector can watch (registerEvent) and any thread can wake
/// (trigger). Each backend defines it over its kernel's primitive (eventfd, a pipe, port_send).
class SelectEvent;

/// Nim's ioselectors interface: what the portable loop needs from a backend. Every backend
/// implements it in this order:
/// ```
///   Selector()               newSelector: open the kernel object (throws OSError)
///   ~Selector()              close; also closes the kernel objects of registerTimer,
///                            registerSignal and registerProcess still registered
///   registerHandle(fd, ev, data)  start watching fd for ev (ev may be empty: registered, not
///                            armed)
///   updateHandle(fd, ev)     change what fd is watched for
///   unregister(fd)           forget fd (it is not closed, unless the selector made it: a timer,
///                            signal or process key's kernel object is closed)
///   registerTimer(ms, oneshot, data)  a timer key firing every ms (once if oneshot); its fd
///   registerSignal(sig, data)     a key reporting sig (blocked for this thread meanwhile); its fd
///   registerProcess(pid, data)    a key reporting once that the child pid exited; its fd
///   registerEvent(ev, data), unregister(ev)  watch or forget a SelectEvent
///   selectInto(timeout, keys)     wait at most timeout ms (-1: forever) and fill keys; returns
///                            how many; EINTR is zero keys, not an error. Consumes what the
///                            kernel queued for timer, signal and event keys; a oneshot timer
///                            that fired and a process that exited report Finished and are
///                            disarmed (no longer in count) until the loop unregisters them
///   contains(fd), getData(fd)     the registry
///   isCurrent(key)           whether key, from the last selectInto, still reports the
///                            registration that holds key.fd now (a callback earlier in the
///                            batch may have closed the descriptor and given its number to a
///                            new key)
///   fds                      the table of SelectorKey<T>, indexed by descriptor (the drawing's)
///   count                    armed registrations (non-empty event sets), Nim's `count`
///   dump(os)                 print the kernel handle and the fds table in the drawing's notation
///   forgetAfterFork()        in a forked child: close the descriptors the selector made (its
///                            kernel queue too, where fork copies it) without a control call on
///                            the queue, whose registrations may be the parent's, and forget
///                            every key; the selector is then empty, and its destructor idle
/// ```
/// and of SelectEvent: its constructor (newSelectEvent), trigger() (safe from any thread; triggers
/// before the next selectInto coalesce), close() and getFd().
/// Misuse (registering twice, an unknown fd, a bad signal or pid) throws ValueError naming the
/// call and the value.
template <class S, class T = PData, class E = SelectEvent>
concept SelectorBackend =
    std::default_initializable<S> && !std::copy_constructible<S> && std::default_initializable<E> &&
    !std::copy_constructible<E> &&
    requires(S & s, const S& cs, SocketHandle fd, EventSet events, T data, int timeout,
             bool oneshot, int value, E& ev, const E& cev, std::span<ReadyKey> keys,
             const ReadyKey& key, std::ostream& os) {
  { s.registerHandle(fd, events, std::move(data)) } -> std::same_as<void>;
  { s.updateHandle(fd, events) } -> std::same_as<void>;
  { s.unregister(fd) } -> std::same_as<void>;
  { s.registerTimer(timeout, oneshot, std::move(data)) } -> std::same_as<SocketHandle>;
  { s.registerSignal(value, std::move(data)) } -> std::same_as<SocketHandle>;
  { s.registerProcess(value, std::move(data)) } -> std::same_as<SocketHandle>;
  { s.registerEvent(ev, std::move(data)) } -> std::same_as<void>;
  { s.unregister(ev) } -> std::same_as<void>;
  { s.selectInto(timeout, keys) } -> std::same_as<int>;
  { cs.contains(fd) } -> std::same_as<bool>;
  { s.getData(fd) } -> std::same_as<T&>;
  { cs.isCurrent(key) } -> std::same_as<bool>;
  { cs.count } -> std::convertible_to<int>;
  { cs.fds[0].data } -> std::convertible_to<const T&>;
  { cs.dump(os) } -> std::same_as<void>;
  { s.forgetAfterFork() } -> std::same_as<void>;
  { cev.trigger() } -> std::same_as<void>;
  { ev.close() } -> std::same_as<void>;
  { cev.getFd() } -> std::same_as<SocketHandle>;
};

} // namespace asyncdispatch
