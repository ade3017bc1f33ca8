// The dispatcher of the readiness family (epoll, kqueue, event ports, poll): Nim's POSIX
// PDispatcher, the shared timers and callbacks plus the backend's Selector.
#pragma once

#include "../../include/asyncdispatch/dispatcher.hpp"
#include "../../include/asyncdispatch/selector.hpp"

namespace asyncdispatch {

/// Nim's PDispatcher on POSIX: the timers and callbacks every backend has, plus the selector.
/// Reached through a PDispatcher; newDispatcher makes one.
struct Dispatcher : DispatcherBase {
  /// Opens the selector, as Nim's newDispatcher does.
  Dispatcher() = default;
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;
  // Destroys the coroutines still suspended first, while the selector, timers and callbacks
  // they may touch from their destructors are all still there.
  ~Dispatcher() { suspended.destroyAll(); }

  Selector<PData> selector; ///< Nim's selector: the descriptors and what they wait for
};

/// Nim's getIoHandler: the dispatcher's selector.
Selector<PData>& getIoHandler(const PDispatcher& disp);

namespace detail {
// What the readiness family's wait reports (src/family.hpp): ready keys.
using FamilyReport = ReadyKey;
} // namespace detail

} // namespace asyncdispatch
