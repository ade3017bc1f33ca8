// The dispatcher (Nim's PDispatcher) and everything that runs it: callSoon, timers, the poll loop,
// the per-thread global dispatcher and the descriptor registry.
//
// The dispatcher struct itself differs by backend (a Selector on POSIX, a completion port on
// Windows) and is defined in backend.hpp; what every backend shares is DispatcherBase.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <iosfwd>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "future.hpp"
#include "timespan.hpp"
#include "types.hpp"

namespace asyncdispatch {

/// @cond
// One entry of Nim's `timers: seq[tuple[finishAt, fut]]`: fut completes once the monotonic clock
// reaches finishAt.
struct TimerEntry {
  std::chrono::steady_clock::time_point finishAt;
  Future<void> fut;
};

// The container behind `timers` (Nim's seq): an array of entries indexed like a vector, but
// kept in fixed blocks, so that growing never moves the entries already there. A vector growing
// to a million timers copies every entry at each doubling and holds old and new arrays at once;
// here a burst of timers costs only the blocks it fills, and blocks are freed as it drains.
class TimerHeap {
public:
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  TimerEntry& operator[](std::size_t i) noexcept { return blocks_[i / kBlock][i % kBlock]; }
  const TimerEntry& operator[](std::size_t i) const noexcept {
    return blocks_[i / kBlock][i % kBlock];
  }
  TimerEntry& front() noexcept { return (*this)[0]; }
  const TimerEntry& front() const noexcept { return (*this)[0]; }
  TimerEntry& back() noexcept { return (*this)[size_ - 1]; }

  // In heap order (not firing order), for range-for.
  template <class Heap, class Entry>
  class Iterator {
  public:
    using value_type = TimerEntry;
    using difference_type = std::ptrdiff_t;
    Iterator() = default;
    Iterator(Heap* heap, std::size_t i) : heap_(heap), i_(i) {}
    Entry& operator*() const { return (*heap_)[i_]; }
    Entry* operator->() const { return &(*heap_)[i_]; }
    Iterator& operator++() {
      ++i_;
      return *this;
    }
    Iterator operator++(int) { return Iterator(heap_, i_++); }
    bool operator==(const Iterator& other) const { return i_ == other.i_; }

  private:
    Heap* heap_ = nullptr;
    std::size_t i_ = 0;
  };
  Iterator<TimerHeap, TimerEntry> begin() noexcept { return {this, 0}; }
  Iterator<TimerHeap, TimerEntry> end() noexcept { return {this, size_}; }
  Iterator<const TimerHeap, const TimerEntry> begin() const noexcept { return {this, 0}; }
  Iterator<const TimerHeap, const TimerEntry> end() const noexcept { return {this, size_}; }

  void push_back(TimerEntry entry) {
    if (size_ == blocks_.size() * kBlock) blocks_.push_back(std::make_unique<TimerEntry[]>(kBlock));
    (*this)[size_] = std::move(entry);
    ++size_;
  }
  void pop_back() noexcept {
    back() = TimerEntry{}; // drops the future's reference now
    --size_;
    // One spare block is kept, so that a heap breathing around a block boundary does not
    // allocate and free a block each time.
    if (blocks_.size() * kBlock >= size_ + 2 * kBlock) blocks_.pop_back();
  }
  void clear() noexcept {
    blocks_.clear();
    size_ = 0;
  }
  // Keeps the entries for which drop(entry) is false, in their order (std::erase_if).
  template <class Pred>
  void eraseIf(Pred drop) {
    std::size_t kept = 0;
    for (std::size_t i = 0; i < size_; ++i) {
      if (drop((*this)[i])) continue;
      if (kept != i) (*this)[kept] = std::move((*this)[i]);
      ++kept;
    }
    while (size_ > kept)
      pop_back();
  }

private:
  static constexpr std::size_t kBlock = 4096; // entries: 64 KiB, below malloc's mmap threshold
  std::vector<std::unique_ptr<TimerEntry[]>> blocks_;
  std::size_t size_ = 0;
};
/// @endcond

/// Nim's PDispatcherBase: what the dispatcher holds on every backend.
struct DispatcherBase {
  /// @cond
  // Not in Nim's drawing: the coroutines suspended on this dispatcher, destroyed with it.
  // Declared first so that it is destroyed last, after everything that might resume them.
  detail::SuspendedList suspended;
  // A 4-ary min-heap (see dispatcher.cpp) ordered by finishAt, ties broken by the future's id,
  // that is by creation order: two timers due at the same instant fire in the order they were
  // made.
  TimerHeap timers;
  // Not in Nim's drawing: how many entries of `timers` belong to cancelled timers (withTimeout's
  // losing timer). They are skipped when they come to the top, and the heap is rebuilt without
  // them once they are half of it, so finished withTimeouts do not hold the heap's memory.
  std::size_t cancelledTimers = 0;
  // The callSoon queue: future callbacks and callSoon'd functions, run in FIFO order by poll.
  std::deque<detail::UniqueFunction<void()>> callbacks;
  /// @endcond
};

struct Dispatcher;
/// Nim's PDispatcher is a `ref`: a shared_ptr to the backend's Dispatcher (see backend.hpp).
using PDispatcher = std::shared_ptr<Dispatcher>;

/// Nim's newDispatcher: a new dispatcher, not installed as the thread's global one.
PDispatcher newDispatcher();
/// Nim's setGlobalDispatcher: installs disp for this thread. ValueError if the dispatcher it
/// replaces still has queued callbacks (they would be lost; Nim asserts the same).
void setGlobalDispatcher(PDispatcher disp);
/// Nim's getGlobalDispatcher: this thread's dispatcher, made on first use.
PDispatcher getGlobalDispatcher();

/// Nim's callSoon: runs cb, any callable void() (a function, a lambda, a move-only object),
/// from the callback phase of a later poll (never inline). ValueError for a null function pointer.
template <class F>
void callSoon(F&& cb) {
  detail::UniqueFunction<void()> fn(std::forward<F>(cb));
  if (!fn) throw ValueError("callSoon: the callback is empty");
  detail::enqueueCallback(std::move(fn));
}

namespace detail {
// sleepAsync's timer: completes once delay has passed on the monotonic clock.
Future<void> sleepFor(std::chrono::nanoseconds delay);
} // namespace detail

/// Nim's sleepAsync: a future that completes after ms milliseconds on the monotonic clock; zero or
/// negative is due at once and completes on the next poll.
Future<void> sleepAsync(int ms);
/// Nim's sleepAsync of a float: ms may be fractional.
Future<void> sleepAsync(double ms);
/// Beside Nim's: a std::chrono::duration (sleepAsync(50ms)), kept to the clock's resolution and
/// rounded up, or milliseconds of any other integer type; a delay beyond about 31 years is clamped.
template <detail::TimeSpan D>
Future<void> sleepAsync(D delay) {
  return detail::sleepFor(detail::delayOf("sleepAsync", delay));
}
/// Nim's sleepAsync of a float or long double, in milliseconds as the double overload takes.
template <std::floating_point F>
requires(!std::same_as<F, double>) Future<void> sleepAsync(F ms) {
  return sleepAsync(static_cast<double>(ms));
}

namespace detail {
// Takes a sleepAsync timer out of the loop without running anything: its callbacks are dropped,
// then it is cancelled (its entry no longer counts as pending: DispatcherBase::cancelledTimers).
void cancelTimer(const Future<void>& timer);

// withTimeout and wait: true if fut finishes within ms, false otherwise; a failure of fut fails
// the result. When fut wins, its timer leaves the loop at once; when the timer wins, wait also
// cancels fut. Cancelling the result takes the timer out (and, for wait, cancels fut).
template <class T>
struct TimerRace final : Canceller {
  Future<bool> ret;
  Future<void> timer;
  Future<T> loser; // wait's fut, cancelled if the timer wins; nil for withTimeout

  TimerRace() = default;
  TimerRace(const TimerRace&) = delete;
  TimerRace& operator=(const TimerRace&) = delete;
  // Gone while ret is pending (its dispatcher was destroyed): ret must not point back here.
  ~TimerRace() {
    if (!ret.isNil() && !ret.finished()) stateOf(ret).setCancelHook(CancelHook());
  }

  // Works on copies: when fut's callback is gone (callback= or clearCallbacks on fut), the
  // timer's callback holds the last reference to this race, and cancelTimer destroys it.
  void cancel(FutureStateBase&) override {
    const Future<bool> r = ret;
    const Future<void> t = timer;
    const Future<T> l = loser;
    cancelTimer(t);
    if (!l.isNil()) l.cancel();
    if (!r.finished()) r.fail(CancelledError(std::string(r.fromProc()) + ": cancelled"));
  }
};

template <class T>
Future<bool> raceTimer(const char* name, Future<T> fut, std::chrono::nanoseconds delay,
                       bool cancelLoser) {
  if (fut.isNil()) throw ValueError(std::string(name) + ": Future is nil");
  auto race = std::make_shared<TimerRace<T>>();
  race->ret = newFuture<bool>(name);
  race->timer = sleepFor(delay);
  if (cancelLoser) race->loser = fut;
  stateOf(race->ret).setCancelHook(CancelHook::object(race.get()));
  fut.addCallback([race](Future<T> f) {
    if (race->ret.finished()) return;
    cancelTimer(race->timer);
    if (f.failed()) {
      race->ret.fail(f.readError());
    } else {
      race->ret.complete(true);
    }
  });
  race->timer.addCallback([race] {
    if (race->ret.finished()) return;
    race->ret.complete(false);
    if (!race->loser.isNil()) race->loser.cancel();
  });
  return race->ret;
}
} // namespace detail

/// Nim's withTimeout: true if fut finishes within ms, false otherwise (fut keeps running). A
/// failure of fut fails the result. Beyond Nim, the callbacks are appended (a user's stay) and
/// when fut wins its timer leaves the loop at once: it no longer counts as pending.
template <class T>
Future<bool> withTimeout(Future<T> fut, int ms) {
  return detail::raceTimer("withTimeout", std::move(fut), std::chrono::milliseconds(ms), false);
}
/// Beside Nim's: a std::chrono::duration (withTimeout(f, 2s)) or milliseconds of any other
/// integer type, as sleepAsync takes them.
template <class T, detail::TimeSpan D>
Future<bool> withTimeout(Future<T> fut, D timeout) {
  return detail::raceTimer("withTimeout", std::move(fut), detail::delayOf("withTimeout", timeout),
                           false);
}

/// Beyond Nim: withTimeout that cancels fut when the timer wins, so the operation stops (DESIGN
/// §5's cancellation); fut then fails with CancelledError.
template <class T>
Future<bool> wait(Future<T> fut, int ms) {
  return detail::raceTimer("wait", std::move(fut), std::chrono::milliseconds(ms), true);
}
/// wait with a std::chrono::duration or any other integer, as withTimeout takes them.
template <class T, detail::TimeSpan D>
Future<bool> wait(Future<T> fut, D timeout) {
  return detail::raceTimer("wait", std::move(fut), detail::delayOf("wait", timeout), true);
}

/// Nim's poll: one pass of the loop (see src/poll.cpp for its phases). ValueError("No handles or
/// timers registered in dispatcher.") when there is nothing to wait for.
void poll(int timeout = 500);
/// Beside Nim's: a std::chrono::duration, rounded up to whole milliseconds, or milliseconds of any
/// other integer type; a negative duration waits for nothing, one beyond 24.8 days for no limit.
template <detail::TimeSpan D>
void poll(D timeout) {
  poll(detail::loopTimeoutOf("poll", timeout));
}
/// Nim's drain: polls while anything is pending, for at most timeout ms on the monotonic clock;
/// returns early once nothing is pending and never throws when idle.
void drain(int timeout = 500);
/// Beside Nim's: a std::chrono::duration or any integer, as poll takes them.
template <detail::TimeSpan D>
void drain(D timeout) {
  drain(detail::loopTimeoutOf("drain", timeout));
}
/// Nim's runForever: polls until poll throws, normally the "No handles" ValueError.
void runForever();
/// Nim's waitFor: polls until fut finishes, then reads it; the value is moved out when the caller
/// passed the only handle (waitFor(someCoroutine())).
template <class T>
T waitFor(Future<T> fut) {
  while (!fut.finished())
    poll();
  return std::move(fut).read();
}
/// Nim's hasPendingOperations: an armed descriptor, a timer or a queued callback exists.
bool hasPendingOperations();

/// Nim's register: watch fd (nothing is armed until an operation waits on it). ValueError if fd
/// is already registered.
void register_(AsyncFD fd);
/// Nim's unregister: forget fd without closing it. Beyond Nim, operations still waiting on fd fail
/// with an OSError containing "unregistered" instead of never finishing.
void unregister(AsyncFD fd);
/// Nim's contains: whether fd is registered with disp.
bool contains(const PDispatcher& disp, AsyncFD fd);
/// Nim's closeSocket: unregisters and closes fd; operations still waiting fail once with an
/// OSError (EBADF) whose message names the operation and says the socket was closed.
void closeSocket(AsyncFD fd);
/// Nim's addRead: calls cb, any callable bool(AsyncFD), each time fd is readable until cb
/// returns true.
void addRead(AsyncFD fd, Callback cb);
/// Nim's addWrite: calls cb each time fd is writable until cb returns true.
void addWrite(AsyncFD fd, Callback cb);
/// Nim's activeDescriptors: armed registrations (an fd with an operation waiting counts, a merely
/// registered one does not).
int activeDescriptors();
/// Nim's maxDescriptors: the process's descriptor limit minus one.
int maxDescriptors();
/// Nim's setInheritable: whether fd survives exec (clears or sets close-on-exec); false on error.
bool setInheritable(AsyncFD fd, bool inheritable);

/// Prints the live dispatcher in the notation of Nim's drawing (registered fds with their events
/// and callback counts, pending timers, queued callbacks).
void dumpDispatcher(std::ostream& os, const PDispatcher& disp = getGlobalDispatcher());

} // namespace asyncdispatch
