// The dispatcher of the readiness family (epoll, kqueue, event ports, poll): Nim's POSIX
// PDispatcher, the shared timers and callbacks plus the backend's Selector.
#pragma once

#include <ostream>
#include <span>
#include <vector>

#include "../../include/asyncdispatch/dispatcher.hpp"
#include "../../include/asyncdispatch/selector.hpp"

namespace asyncdispatch {

struct Dispatcher : DispatcherBase {
  Dispatcher() = default;
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;
  // Destroys the coroutines still suspended first, while the selector, timers and callbacks
  // they may touch from their destructors are all still there.
  ~Dispatcher() { suspended.destroyAll(); }

  Selector<PData> selector;
};

// Nim's getIoHandler: the dispatcher's selector.
Selector<PData>& getIoHandler(const PDispatcher& disp);

namespace detail {

struct AddrInfo;

// The family contract (src/family.hpp) over Selector<PData>, in the contract's order
// (platform/posix/family.cpp): operations wait for readiness, reported as ReadyKeys.
struct ReadinessFamily {
  using Report = ReadyKey;
  static int waitForEvents(Dispatcher& p, int timeout, std::span<ReadyKey> reports);
  static void processEvent(Dispatcher& p, const ReadyKey& key);
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
};
using Family = ReadinessFamily;

} // namespace detail

} // namespace asyncdispatch
