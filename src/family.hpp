// The family contract: what the pass (poll, src/poll.cpp) and the registry calls (register_,
// unregister, closeSocket, addRead, cancel ...) need from an OS family, written once as a C++20
// concept that each family satisfies, as Nim's selectors.nim declares its interface once. A family
// is how operations run on a kind of kernel: the readiness family (platform/posix/) builds every
// socket operation over any Selector<PData> (epoll, kqueue, event ports, poll); the completion
// family (platform/windows/) starts overlapped operations and collects their completions (IOCP).
#pragma once

#include <concepts>
#include <ostream>
#include <span>
#include <utility>
#include <vector>

#include "../include/asyncdispatch/backend.hpp"

namespace asyncdispatch::detail {

struct AddrInfo;

// F's requirements, in the order every family implements them:
template <class F>
concept FamilyBackend = requires(Dispatcher& p, const Dispatcher& cp, int timeout,
                                 std::span<typename F::Report> reports,
                                 const typename F::Report& report, AsyncFD fd, const char* op,
                                 const char* why, Callback cb, std::vector<Callback> PData::*list,
                                 const FutureStateBase& fut, const AddrInfo& target,
                                 std::ostream& os) {
  // Phase 2: wait at most `timeout` ms (-1: forever) and fill `reports` with what the kernel
  // reported (ready keys, completions); how many. No system call when nothing can be reported
  // and the timeout is 0. EINTR is zero reports, not an error.
  { F::waitForEvents(p, timeout, reports) } -> std::same_as<int>;
  // Phase 3 for one report: run what it makes ready (processBasicCallbacks for a descriptor's
  // lists, processCustomCallbacks for a timer's, signal's, process's or event's key, a
  // completion's callback). A report gone stale meanwhile (its descriptor closed) runs nothing.
  { F::processEvent(p, report) } -> std::same_as<void>;
  // Whether anything waits on the kernel (hasPendingOperations adds timers and callbacks).
  { F::hasPendingIo(cp) } -> std::same_as<bool>;
  // Nim's activeDescriptors: descriptors and keys with something armed.
  { F::armedCount(cp) } -> std::same_as<int>;
  // Nim's register and contains: watch fd with nothing armed; whether fd is watched.
  { F::registerHandle(p, fd) } -> std::same_as<void>;
  { F::contains(cp, fd) } -> std::same_as<bool>;
  // Whether fd is the key of a timer, signal, process or event (the library's, not a socket).
  { F::isCustomKey(cp, fd) } -> std::same_as<bool>;
  // unregister of such a key: it stops, its callback dropped without running (as in Nim).
  { F::unregisterCustom(p, fd) } -> std::same_as<void>;
  // unregister and closeSocket of a socket: fd leaves the kernel's watch and the dispatcher, the
  // operations in flight on it fail with an OSError saying `why` ("closed", "unregistered"), and
  // the callbacks of addRead/addWrite are handed back for the loop to fail (abandonCallbacks).
  { F::forget(p, fd, why) } -> std::same_as<PData>;
  // closeSocket's close: 0, or the OS's error (the descriptor is gone either way).
  { F::closeHandle(p, fd) } -> std::same_as<int>;
  // addRead/addWrite: cb joins fd's list (readCBs or writeCBs) and fd is armed for it.
  { F::addCallback(p, op, fd, list, std::move(cb)) } -> std::same_as<void>;
  // fut.cancel() of an operation waiting on fd: it stops (its callback leaves fd's list, or its
  // overlapped call is cancelled); false if fd has no operation serving fut.
  { F::cancelWaiting(p, fd, fut) } -> std::same_as<bool>;
  // connect and dial: one attempt at one resolved address.
  { F::connectAddress(fd, target) } -> std::same_as<Future<void>>;
  // dumpDispatcher: the family's part of the drawing (the selector, or ioPort and handles).
  { F::dump(cp, os) } -> std::same_as<void>;
  // A forked child's first use of the dispatcher its thread inherited (src/dispatcher.cpp): every
  // key and operation of p is forgotten without a change to the kernel state the parent shares,
  // and the sockets that were registered are returned, for the fresh dispatcher to register.
  { F::forgetAfterFork(p) } -> std::same_as<std::vector<AsyncFD>>;
};

// The family of this build, declared once in the contract's order; each family defines these
// (platform/posix/family.cpp and net.cpp over a Selector; platform/windows/family.cpp and net.cpp
// over IOCP). Report is the family's: ReadyKey, or IOCP's OVERLAPPED_ENTRY (backend.hpp).
struct Family {
  using Report = FamilyReport;
  static int waitForEvents(Dispatcher& p, int timeout, std::span<Report> reports);
  static void processEvent(Dispatcher& p, const Report& report);
  static bool hasPendingIo(const Dispatcher& p);
  static int armedCount(const Dispatcher& p);
  static void registerHandle(Dispatcher& p, AsyncFD fd);
  static bool contains(const Dispatcher& p, AsyncFD fd);
  static bool isCustomKey(const Dispatcher& p, AsyncFD fd);
  static void unregisterCustom(Dispatcher& p, AsyncFD fd);
  static PData forget(Dispatcher& p, AsyncFD fd, const char* why);
  static int closeHandle(Dispatcher& p, AsyncFD fd);
  static void addCallback(Dispatcher& p, const char* op, AsyncFD fd,
                          std::vector<Callback> PData::*list, Callback cb);
  static bool cancelWaiting(Dispatcher& p, AsyncFD fd, const FutureStateBase& fut);
  static Future<void> connectAddress(AsyncFD socket, const AddrInfo& target);
  static void dump(const Dispatcher& p, std::ostream& os);
  static std::vector<AsyncFD> forgetAfterFork(Dispatcher& p);
};
static_assert(FamilyBackend<Family>);

} // namespace asyncdispatch::detail
