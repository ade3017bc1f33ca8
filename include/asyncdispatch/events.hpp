// What the dispatcher watches besides sockets (Nim's addTimer, AsyncEvent, addProcess and
// addSignal): each is a key of the selector with one callback, which gets the key's descriptor.
// The callback returns true to remove itself; the key is then unregistered and the kernel object
// the library made for it (timer, signal or process watcher) closed.
#pragma once

#include <climits>
#include <memory>
#include <string>
#include <utility>

#include "errors.hpp"
#include "timespan.hpp"
#include "types.hpp"

namespace asyncdispatch {

/// Nim's addTimer: calls cb every `timeout` ms on the monotonic clock until cb returns true; a
/// oneshot timer calls cb once and is gone whatever cb returns (beyond Nim: Nim keeps a dead key).
/// ValueError if timeout is not positive.
void addTimer(int timeout, bool oneshot, Callback cb);
/// Beside Nim's: a std::chrono::duration (addTimer(20ms, ...)), rounded up to whole milliseconds
/// (so 1us is 1 ms and the timer never ticks early), or milliseconds of any other integer type.
/// ValueError, as for the int, when that is not positive, and when it is more than an int holds.
template <detail::TimeSpan D>
void addTimer(D timeout, bool oneshot, Callback cb) {
  const long long ms = detail::millisecondsOf("addTimer", timeout);
  if (ms > INT_MAX)
    throw ValueError("addTimer: the timeout is longer than " + std::to_string(INT_MAX) + " ms");
  addTimer(static_cast<int>(ms), oneshot, std::move(cb));
}

namespace detail {
struct AsyncEventState;
} // namespace detail

/// Nim's AsyncEvent: a user event that any thread can trigger and one dispatcher can watch. A
/// copyable handle to shared state, like a Nim ref; default-constructed, it is nil. The event is
/// closed by close() or when the last handle is gone and no dispatcher watches it.
class AsyncEvent {
public:
  /// Nim's nil AsyncEvent; newAsyncEvent makes a real one.
  AsyncEvent() noexcept = default;
  /// Nim's `ev == nil`.
  bool isNil() const noexcept { return state_ == nullptr; }
  /// Nim's `==` of refs: the same event.
  bool operator==(const AsyncEvent&) const noexcept = default;

private:
  explicit AsyncEvent(std::shared_ptr<detail::AsyncEventState> state) noexcept
      : state_(std::move(state)) {}
  friend AsyncEvent newAsyncEvent();
  friend void trigger(AsyncEvent ev);
  friend void addEvent(AsyncEvent ev, Callback cb);
  friend void unregister(AsyncEvent ev);
  friend void close(AsyncEvent ev);

  std::shared_ptr<detail::AsyncEventState> state_;
};

/// Nim's newAsyncEvent: a new event, not yet watched. OSError if the OS refuses.
AsyncEvent newAsyncEvent();
/// Nim's trigger: wakes the dispatcher that watches ev; the one call that is safe from any thread.
/// Triggers before the dispatcher reads the event coalesce into one callback call. ValueError if
/// ev is nil or closed. A trigger that races close() on another thread either lands before the
/// close or throws that ValueError; it never touches the closed descriptor, whose number may
/// already be another's.
void trigger(AsyncEvent ev);
/// Nim's addEvent: calls cb (any callable bool(AsyncFD), as for every Callback) after each
/// trigger until cb returns true, which unregisters ev (it stays open). ValueError if ev is nil,
/// closed or already watched by this thread's dispatcher.
void addEvent(AsyncEvent ev, Callback cb);
/// Nim's unregister(ev): stops watching ev (it stays open). ValueError if this thread's dispatcher
/// does not watch it.
void unregister(AsyncEvent ev);
/// Nim's close(ev): closes the event. Beyond Nim, an event this thread's dispatcher watches is
/// unregistered first, and the descriptor is closed only once the triggers
/// already under way on other threads are done (later ones throw ValueError); closing twice does
/// nothing. Do not close an event that another thread's dispatcher watches.
void close(AsyncEvent ev);

/// Nim's addProcess: calls cb once when the child pid exits, also when it exited before the call.
/// The library never reaps it: cb may waitpid it to read its status. ValueError for a pid <= 0,
/// OSError (ECHILD) for a process that is not a child of this one (POSIX; on Windows any process
/// this one may open with SYNCHRONIZE, else OSError from OpenProcess).
void addProcess(int pid, Callback cb);
/// Nim's addSignal: calls cb each time `signal` arrives until cb returns true. The signal is
/// blocked in this thread meanwhile (block it in every thread of a multi-threaded program before
/// starting them, or another thread takes it) and its mask restored on removal. ValueError for
/// a number that is not a catchable signal, or one this thread already watches.
void addSignal(int signal, Callback cb);

} // namespace asyncdispatch
