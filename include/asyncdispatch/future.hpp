// Futures (Nim's asyncfutures) and the C++20 coroutine machinery that stands in for Nim's
// {.async.} macro: any function returning Future<T> may co_await futures and co_return a value.
//
// A Future<T> is a copyable handle to shared state, as a Nim `ref` is. The rules that matter:
//  - callbacks never run inside complete()/fail(): they are queued on the thread's dispatcher
//    (Nim's callSoon) in registration order, and run by poll();
//  - co_await of a finished future does not suspend, so a loop of finished awaits uses no stack;
//  - a coroutine body runs synchronously up to its first co_await of an unfinished future, and an
//    exception that leaves the body fails the coroutine's future.
#pragma once

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "errors.hpp"
#include "function.hpp"
#include "recycler.hpp"

namespace asyncdispatch {

class FutureBase;
template <class T>
class Future;

namespace detail {

// Whether a future's value can be copied for a reader that leaves it in place. The standard
// trait says yes for a std::vector of move-only values (its copy constructor is not
// constrained), so a vector, as all() gives, asks of its elements.
template <class T>
inline constexpr bool copyableValue = std::is_copy_constructible_v<T>;
template <class T, class A>
inline constexpr bool copyableValue<std::vector<T, A>> = copyableValue<T>;

// Queues `cb` on this thread's dispatcher, making the dispatcher on first use (Nim's callSoon).
void enqueueCallback(UniqueFunction<void()> cb);

// Nim's "Future ID": numbers futures in creation order, per thread.
extern constinit thread_local std::uint64_t futureCounter;
inline std::uint64_t nextFutureId() noexcept {
  return futureCounter++;
}

// A future's callbacks, in the order they were added. Nearly every future has exactly one (the
// coroutine that awaits it), so one slot holds it inline; a second callback moves both into a
// vector, which then takes the slot's place (a `Many`), so the list costs one callable's room.
class CallbackList {
public:
  bool empty() const noexcept { return !slot_; }
  void push(UniqueFunction<void()> cb) {
    if (!slot_) {
      slot_ = std::move(cb);
    } else if (Many* many = slot_.target<Many>()) {
      many->list->push_back(std::move(cb));
    } else {
      Many two{std::make_unique<std::vector<UniqueFunction<void()>>>()};
      two.list->reserve(2);
      two.list->push_back(std::move(slot_));
      two.list->push_back(std::move(cb));
      slot_ = std::move(two);
    }
  }
  CallbackList() noexcept = default;
  CallbackList(CallbackList&&) noexcept = default; // leaves the other empty
  CallbackList& operator=(CallbackList&&) = delete;
  void clear() noexcept { slot_.reset(); }
  // Hands every callback, in order, to `take`, and leaves the list empty.
  template <class F>
  void takeAll(F&& take) {
    if (!slot_) return;
    UniqueFunction<void()> taken = std::move(slot_);
    if (Many* many = taken.target<Many>()) {
      for (UniqueFunction<void()>& cb : *many->list)
        take(std::move(cb));
    } else {
      take(std::move(taken));
    }
  }

private:
  // Two or more callbacks; calling it runs them in order (takeAll hands them out one by one).
  struct Many {
    std::unique_ptr<std::vector<UniqueFunction<void()>>> list;
    void operator()() {
      for (UniqueFunction<void()>& cb : *list)
        cb();
    }
  };
  UniqueFunction<void()> slot_;
};

struct FutureStateBase;

// What stops the operation behind a pending future when it is cancelled: the coroutine that will
// complete it, its timer, a FutureStream it reads from. cancel() ends by failing the future with
// CancelledError, or passes the cancellation on (a coroutine cancels what it awaits).
class Canceller {
public:
  virtual void cancel(FutureStateBase& fut) = 0;

protected:
  ~Canceller() = default;
};

class CoroutineCanceller;

// The one word a pending future spends on cancellation: nothing, a Canceller, the coroutine that
// will complete it, or the descriptor whose callback list holds the operation (the family takes
// it out: cancelWaiting). The low two bits say which: pointers are at least 8-aligned, and a
// descriptor is stored shifted left by two. A coroutine is its own kind so that a coroutine
// frame needs no virtual table: its promise is built on every coroutine call.
class CancelHook {
public:
  CancelHook() noexcept = default;
  static CancelHook object(Canceller* c) noexcept {
    return CancelHook(reinterpret_cast<std::uintptr_t>(c));
  }
  static CancelHook coroutine(CoroutineCanceller* c) noexcept {
    return CancelHook(reinterpret_cast<std::uintptr_t>(c) | kCoroutine);
  }
  static CancelHook descriptor(std::intptr_t fd) noexcept {
    return CancelHook((static_cast<std::uintptr_t>(fd) << 2) | kDescriptor);
  }
  bool isDescriptor() const noexcept { return (bits_ & kTag) == kDescriptor; }
  std::intptr_t fd() const noexcept { return static_cast<std::intptr_t>(bits_) >> 2; }
  CoroutineCanceller* coroutine() const noexcept {
    return (bits_ & kTag) == kCoroutine ? reinterpret_cast<CoroutineCanceller*>(bits_ & ~kTag)
                                        : nullptr;
  }
  Canceller* canceller() const noexcept {
    return (bits_ & kTag) == 0 ? reinterpret_cast<Canceller*>(bits_) : nullptr;
  }

private:
  static constexpr std::uintptr_t kTag = 3, kDescriptor = 1, kCoroutine = 2;
  explicit CancelHook(std::uintptr_t bits) noexcept : bits_(bits) {}
  std::uintptr_t bits_ = 0;
};

// Where a coroutine is defined, for its frame in async tracebacks.
struct CoroutineSite {
  const char* procname;
  const char* filename;
  int line;
};

// What a failed future holds, made only when a future fails: the error, and the chain of
// coroutines it left on its way to this future (this path's async traceback).
struct Failure {
  static void* operator new(std::size_t size) { return allocateBlock(size); }
  static void operator delete(void* block, std::size_t size) noexcept { freeBlock(block, size); }

  std::exception_ptr error;
  AsyncTraceback* traced = nullptr; // the error's traceback, if its type carries one
  TracebackChain chain;
};

// The part of a future's state that does not depend on T. Its memory comes from the thread's
// recycler (recycler.hpp).
struct FutureStateBase {
  static void* operator new(std::size_t size) { return allocateBlock(size); }
  static void operator delete(void* block, std::size_t size) noexcept { freeBlock(block, size); }

  explicit FutureStateBase(const char* from) noexcept : fromProc(from), id(nextFutureId()) {}
  FutureStateBase(const FutureStateBase&) = delete;
  FutureStateBase& operator=(const FutureStateBase&) = delete;
  virtual ~FutureStateBase() {
    if (finished) delete failure_;
  }

  // Nim's checkFinished: throws FutureError if the future already finished.
  void checkNotFinished() const {
    if (finished) throwFinishedTwice();
  }
  // Marks the future finished and moves its callbacks to the dispatcher's queue, in order.
  void finish() {
    failure_ = nullptr;
    finished = true;
    if (!callbacks.empty()) scheduleCallbacks();
  }
  // Nim's fail: the future keeps the chain the error shows now (that of the future it was read
  // from), or, when a coroutine's body let it escape (site), that chain with the coroutine's frame.
  void fail(std::exception_ptr e, const CoroutineSite* site = nullptr);
  // Finished with an error (the error is only there once the future has finished).
  bool failed() const noexcept { return finished && failure_ != nullptr; }
  // The error of a failed future, showing this future's traceback (Nim's read and readError
  // inject the traceback into the one exception object).
  const std::exception_ptr& shownError() const noexcept;
  // How cancel() stops the operation; only while pending.
  void setCancelHook(CancelHook hook) noexcept {
    if (!finished) cancelHook_ = hook;
  }
  // fut.cancel(): stops the operation and fails the future with CancelledError (or, for a
  // coroutine, cancels what it awaits). Nothing if the future already finished.
  void cancel();
  // Nim's addCallback: queued at once if the future already finished. holdsSelf says that cb
  // holds a handle to this future (see selfRefs).
  void addCallback(UniqueFunction<void()> cb, bool holdsSelf = false);
  // Nim's clearCallbacks.
  void clearCallbacks() noexcept {
    // Moved out first: destroying them releases their handles, which may free this state.
    selfRefs = 0;
    CallbackList dropped = std::move(callbacks);
  }
  // A handle is gone. When the only references left are those its own waiting callbacks hold, no
  // one can finish the future or read it: they are dropped, which frees it (a cycle that Nim's
  // GC collects and a count alone would not).
  void dropRef() noexcept {
    if (--refs != selfRefs) return;
    if (selfRefs == 0) {
      delete this;
    } else {
      clearCallbacks();
    }
  }
  [[noreturn]] void throwFinishedTwice() const;
  // Callbacks never run inside complete/fail: each is queued on the dispatcher, in order.
  void scheduleCallbacks();
  // For FutureError's "Contents" line; only Future<std::string> has something to show.
  virtual void describeValue(std::string& out) const;

  std::uint32_t refs = 1; // not atomic: a future belongs to one thread's dispatcher
  bool finished = false;
  bool cancelled = false; // failed by cancel() (a timer's entry is then dead: cancelledTimers)
  // How many of refs are held by callbacks waiting in `callbacks` (a callback that takes the
  // future, Future<T>::addCallback, holds a handle to it). Saturates: beyond it, no collection.
  std::uint16_t selfRefs = 0;
  const char* fromProc;
  std::uint64_t id;

private:
  // A pending future never has an error and a finished one has nothing left to cancel, so the
  // two share a word (`finished` says which is there): every future pays for one, not both.
  union {
    CancelHook cancelHook_{};
    Failure* failure_; // null when it completed without an error
  };

public:
  CallbackList callbacks;
};

template <class T>
struct FutureState final : FutureStateBase {
  using FutureStateBase::FutureStateBase;
  void describeValue(std::string& out) const override {
    if constexpr (std::is_convertible_v<const T&, std::string>) {
      if (value) out += *value;
    }
  }
  std::optional<T> value;
};

template <>
struct FutureState<void> final : FutureStateBase {
  using FutureStateBase::FutureStateBase;
};

// A link of the intrusive list through which a dispatcher knows its suspended coroutines.
struct SuspendedLink {
  SuspendedLink* prev = nullptr;
  SuspendedLink* next = nullptr;
  void unlink() noexcept {
    if (prev == nullptr) return;
    prev->next = next;
    next->prev = prev;
    prev = next = nullptr;
  }
};

// The coroutines suspended on one dispatcher (DispatcherBase::suspended). Destroying the
// dispatcher destroys them, as destroying an asio io_context destroys its pending handlers: a
// coroutine waiting for a future that nothing will complete holds that future in its frame, and
// the future holds the coroutine, a cycle that no reference count breaks.
class SuspendedList {
public:
  SuspendedList() noexcept { head_.prev = head_.next = &head_; }
  SuspendedList(const SuspendedList&) = delete;
  SuspendedList& operator=(const SuspendedList&) = delete;
  ~SuspendedList() { destroyAll(); }

  bool empty() const noexcept { return head_.next == &head_; }
  std::size_t size() const noexcept;
  void push(SuspendedLink& link) noexcept;
  // Destroys every coroutine frame still suspended (their locals' destructors run).
  void destroyAll() noexcept;

private:
  SuspendedLink head_;
};

// The list of the thread's current dispatcher, where a coroutine that suspends is linked.
SuspendedList& currentSuspendedList();

// What a coroutine frame of ours knows to pass a cancellation on: the future it is suspended on
// (not a counted reference: the frame holds that future, or whoever holds it owns the frame).
// A cancel that finds the coroutine running is kept and thrown at its next suspension.
class CoroutineCanceller {
public:
  CoroutineCanceller() = default;
  CoroutineCanceller(const CoroutineCanceller&) = delete;
  CoroutineCanceller& operator=(const CoroutineCanceller&) = delete;

  void cancel();

  FutureStateBase* awaiting = nullptr; // set by co_await on suspending, cleared on resuming
  std::coroutine_handle<> self;        // the frame, as co_await last saw it
  bool cancelRequested = false;

protected:
  ~CoroutineCanceller() = default;
};

// The continuation of a suspended coroutine, stored as a future callback and linked into the
// dispatcher's suspended list until it runs. If it is destroyed without having run (the future it
// waited for was dropped unfinished), it destroys the coroutine frame, so nothing leaks. For a
// coroutine of ours it holds the promise, which knows the frame and forgets what it awaited the
// moment it resumes; for any other coroutine type, the frame's handle (low bit set).
class ResumeCoroutine : public SuspendedLink {
public:
  explicit ResumeCoroutine(std::coroutine_handle<> h)
      : bits_(reinterpret_cast<std::uintptr_t>(h.address()) | 1) {
    currentSuspendedList().push(*this);
  }
  explicit ResumeCoroutine(CoroutineCanceller& ours)
      : bits_(reinterpret_cast<std::uintptr_t>(&ours)) {
    currentSuspendedList().push(*this);
  }
  ResumeCoroutine(ResumeCoroutine&& other) noexcept : bits_(std::exchange(other.bits_, 0)) {
    if (other.prev != nullptr) { // take the other's place in the list
      prev = std::exchange(other.prev, nullptr);
      next = std::exchange(other.next, nullptr);
      prev->next = this;
      next->prev = this;
    }
  }
  ResumeCoroutine& operator=(ResumeCoroutine&&) = delete;
  ~ResumeCoroutine() {
    unlink();
    if (bits_ != 0) take().destroy();
  }
  void operator()() {
    unlink();
    take().resume();
  }
  // For SuspendedList::destroyAll: the frame, which this continuation no longer owns.
  std::coroutine_handle<> release() noexcept {
    unlink();
    return take();
  }

private:
  std::coroutine_handle<> take() noexcept {
    const std::uintptr_t bits = std::exchange(bits_, 0);
    if ((bits & 1) != 0)
      return std::coroutine_handle<>::from_address(
          reinterpret_cast<void*>(bits & ~std::uintptr_t(1)));
    auto* ours = reinterpret_cast<CoroutineCanceller*>(bits);
    ours->awaiting = nullptr;
    return ours->self;
  }

  std::uintptr_t bits_;
};

template <class T>
struct Promise;
template <class T>
struct PromiseBase;

// The state behind a future handle, for the library's own plumbing (cancel hooks).
inline FutureStateBase& stateOf(const FutureBase& fut);

} // namespace detail

/// Nim's FutureBase: what every future has whatever its value type.
class FutureBase {
public:
  FutureBase() noexcept = default; ///< refers to no future, like Nim's nil
  /// Another handle to other's future, as a copy of a Nim `ref` is.
  FutureBase(const FutureBase& other) noexcept : state_(other.state_) {
    if (state_) ++state_->refs;
  }
  /// Takes other's future, leaving other nil.
  FutureBase(FutureBase&& other) noexcept : state_(std::exchange(other.state_, nullptr)) {}
  /// Makes this a handle to other's future, as a Nim `ref` assignment does.
  FutureBase& operator=(const FutureBase& other) noexcept {
    if (other.state_) ++other.state_->refs;
    release();
    state_ = other.state_;
    return *this;
  }
  /// Takes other's future, leaving other nil.
  FutureBase& operator=(FutureBase&& other) noexcept {
    if (this != &other) {
      release();
      state_ = std::exchange(other.state_, nullptr);
    }
    return *this;
  }
  ~FutureBase() { release(); }

  /// Nim's finished: completed or failed.
  bool finished() const { return state().finished; }
  /// Nim's failed: finished with an error.
  bool failed() const { return state().failed(); }
  /// Nim's readError: the stored exception; ValueError("No error in future.") if there is none.
  std::exception_ptr readError() const;
  /// Nim's fail: finishes the future with an error and queues its callbacks.
  void fail(std::exception_ptr error) const;
  /// Nim's fail with an exception object: fails the future with a copy of error.
  template <class E>
  requires(!std::is_same_v<std::remove_cvref_t<E>, std::exception_ptr>) void fail(
      const E& error) const {
    fail(std::make_exception_ptr(error));
  }

  /// Beyond Nim: stops the operation behind a pending future and fails it with CancelledError
  /// (derived from IOError): an I/O operation leaves its descriptor's list, a timer leaves
  /// `timers`, a FutureStream read leaves the stream. For a coroutine's future it cancels the
  /// future the coroutine awaits, so the error arrives at that co_await and unwinds it (or is
  /// caught there). Nothing happens to a finished future.
  void cancel() const { state().cancel(); }

  /// Nim's addCallback on a FutureBase, for code that holds futures of mixed value types: cb is
  /// void() or void(FutureBase); it is queued like `Future<T>`'s, after the future finishes.
  template <class F>
  void addCallback(F&& cb) const {
    state().addCallback(wrap(std::forward<F>(cb)), std::is_invocable_v<F&, FutureBase>);
  }
  /// Nim's `callback=` on a FutureBase: replaces every callback the future has with cb.
  template <class F>
  void callback(F&& cb) const {
    state().clearCallbacks();
    addCallback(std::forward<F>(cb));
  }
  /// Nim's clearCallbacks: drops every callback the future has (a coroutine waiting on it is
  /// destroyed with its continuation).
  void clearCallbacks() const { state().clearCallbacks(); }

  /// Nim's fromProc: the name given to newFuture (or the coroutine's).
  const char* fromProc() const { return state().fromProc; }
  /// Nim's id: the future's number in creation order, per thread.
  std::uint64_t id() const { return state().id; }
  /// True for a default-constructed handle, which refers to no future (Nim's nil).
  bool isNil() const noexcept { return state_ == nullptr; }

protected:
  /// @cond
  friend detail::FutureStateBase& detail::stateOf(const FutureBase& fut);
  explicit FutureBase(detail::FutureStateBase* adopted) noexcept : state_(adopted) {}
  detail::FutureStateBase& state() const {
    if (!state_) throwNil();
    return *state_;
  }
  [[noreturn]] static void throwNil();

  detail::FutureStateBase* state_ = nullptr;
  /// @endcond

private:
  void release() noexcept {
    if (state_) state_->dropRef();
  }
  template <class F>
  detail::UniqueFunction<void()> wrap(F&& cb) const {
    if constexpr (std::is_invocable_v<F&, FutureBase>) {
      return [self = *this, f = std::forward<F>(cb)]() mutable { f(self); };
    } else {
      static_assert(std::is_invocable_v<F&>, "a FutureBase callback is void() or void(FutureBase)");
      return detail::UniqueFunction<void()>(std::forward<F>(cb));
    }
  }
};

inline detail::FutureStateBase& detail::stateOf(const FutureBase& fut) {
  return fut.state();
}

/// Nim's `Future[T]`: a copyable handle to a future's shared state, as a Nim `ref` is; a function
/// returning one is a coroutine that may co_await futures and co_return a value (Nim's async).
template <class T>
class Future : public FutureBase {
  // What co_await of a future makes (C++ awaiter protocol); the two kinds below differ in how
  // they give the value.
  struct Awaiter {
    detail::FutureState<T>* s;

    bool await_ready() const noexcept { return s->finished; }
    // A coroutine of ours says what it awaits, so that cancelling it can cancel that. A cancel
    // requested while it was running is delivered now, by cancelling what it is about to await
    // (so that operation stops too), and arrives at this co_await on the next pass.
    template <class P>
    void await_suspend(std::coroutine_handle<P> h) {
      if constexpr (std::is_base_of_v<detail::CoroutineCanceller, P>) {
        detail::CoroutineCanceller& c = h.promise();
        c.awaiting = s;
        c.self = h;
        s->callbacks.push(detail::ResumeCoroutine(c));
        if (c.cancelRequested) {
          c.cancelRequested = false;
          try {
            c.cancel();
          } catch (...) { // out of memory for the message: deliver it at the next suspension
            c.cancelRequested = true;
          }
        }
      } else {
        s->callbacks.push(detail::ResumeCoroutine(h));
      }
    }
  };
  // co_await of a named future: the value stays in the future for its other readers.
  struct SharedAwaiter : Awaiter {
    decltype(auto) await_resume() const { return readShared(*this->s); }
  };
  // co_await of a temporary or of std::move(f): the awaiter takes the handle, and moves the value
  // out when its handle is the future's only one (cppcoro's `co_await std::move(task)`).
  struct OwnerAwaiter : Awaiter {
    Future<T> owner;
    T await_resume() { return readOwned(*this->s); }
  };

public:
  using value_type = T;                    ///< the value type T, Nim's `Future[T]`'s T
  using promise_type = detail::Promise<T>; ///< what makes a function returning it a coroutine

  Future() noexcept = default; ///< refers to no future, like Nim's nil

  /// Nim's complete(f, v): stores the value and queues the callbacks; FutureError if the future
  /// already finished.
  template <class U>
  requires(!std::is_void_v<T> && std::is_constructible_v<T, U&&>) void complete(U&& value) const {
    auto& s = typedState();
    s.checkNotFinished();
    s.value.emplace(std::forward<U>(value));
    s.finish();
  }
  /// Nim's complete(f) of a `Future[void]`; FutureError if the future already finished.
  void complete() const requires std::is_void_v<T> {
    auto& s = typedState();
    s.checkNotFinished();
    s.finish();
  }

  /// Nim's read: the value; rethrows the failure; ValueError("Future still in progress.") if
  /// the future has not finished. The value stays for other readers: read() gives a copy, or, for
  /// a move-only T, a const reference that lives as long as the future's state.
  decltype(auto) read() const& { return readShared(typedState()); }
  /// Nim's read of a handle that is going away (`std::move(f).read()`, waitFor): moves the value
  /// out when that handle is the future's only one, and leaves the handle nil.
  T read() && {
    const Future<T> owner(std::move(*this));
    return readOwned(owner.typedState());
  }

  /// Nim's addCallback: cb is any callable void() or `void(Future<T>)` (a function, a lambda, a
  /// move-only object); it runs from the dispatcher's callback queue after the future finishes,
  /// in the order the callbacks were added. ValueError for a null function pointer.
  template <class F>
  void addCallback(F&& cb) const {
    state().addCallback(wrap(std::forward<F>(cb)), std::is_invocable_v<F&, Future<T>>);
  }
  /// Nim's `callback=`: replaces every callback the future has with cb (a refused cb replaces
  /// nothing).
  template <class F>
  void callback(F&& cb) const {
    detail::UniqueFunction<void()> wrapped = wrap(std::forward<F>(cb));
    state().clearCallbacks();
    state().addCallback(std::move(wrapped), std::is_invocable_v<F&, Future<T>>);
  }

  /// Nim's await: suspends the calling coroutine until the future finishes (nothing if it already
  /// has), then gives the value as read() does, or throws the failure.
  SharedAwaiter operator co_await() const& { return SharedAwaiter{{&typedState()}}; }
  /// Nim's await of a temporary (`co_await someCoroutine()`, `co_await recv(...)`): the value is
  /// moved out when nothing else holds the future, so awaiting a `std::unique_ptr` copies nothing.
  OwnerAwaiter operator co_await() && {
    detail::FutureState<T>* s = &typedState();
    return OwnerAwaiter{{s}, std::move(*this)};
  }

private:
  template <class U>
  friend Future<U> newFuture(const char* fromProc);
  friend struct detail::PromiseBase<T>;

  explicit Future(detail::FutureState<T>* adopted) noexcept : FutureBase(adopted) {}
  detail::FutureState<T>& typedState() const {
    return static_cast<detail::FutureState<T>&>(state());
  }

  // What a reader that leaves the value in place gets: a copy, as Nim's read gives, or a const
  // reference when T cannot be copied.
  using SharedValue = std::conditional_t<std::is_void_v<T> || detail::copyableValue<T>, T,
                                         std::add_lvalue_reference_t<const T>>;

  static SharedValue readShared(const detail::FutureState<T>& s) {
    if (!s.finished) throw ValueError("Future still in progress.");
    if (s.failed()) std::rethrow_exception(s.shownError());
    if constexpr (!std::is_void_v<T>) return *s.value;
  }
  // For a reader whose handle is going away: the value moves out when that handle is the only
  // one (refs counts it), since nothing can read the value after it.
  static T readOwned(detail::FutureState<T>& s) {
    if (!s.finished) throw ValueError("Future still in progress.");
    if (s.failed()) std::rethrow_exception(s.shownError());
    if constexpr (!std::is_void_v<T>) {
      if (s.refs == 1) return std::move(*s.value);
      if constexpr (detail::copyableValue<T>) {
        return *s.value;
      } else {
        throw ValueError(std::string("read: the value of ") + s.fromProc +
                         " cannot be moved out while another handle holds the future, and it "
                         "cannot be copied; read it through a named handle (const T&)");
      }
    }
  }

  template <class F>
  detail::UniqueFunction<void()> wrap(F&& cb) const {
    if constexpr (std::is_pointer_v<std::remove_cvref_t<F>>) {
      if (cb == nullptr) throw ValueError("addCallback: the callback is empty");
    }
    if constexpr (std::is_invocable_v<F&, Future<T>>) {
      return [self = *this, f = std::forward<F>(cb)]() mutable { f(self); };
    } else {
      static_assert(std::is_invocable_v<F&>, "a future callback is void() or void(Future<T>)");
      return detail::UniqueFunction<void()>(std::forward<F>(cb));
    }
  }
};

/// Nim's `newFuture[T](fromProc)`: a pending future; fromProc names it in errors and dumps.
template <class T>
Future<T> newFuture(const char* fromProc = "unspecified") {
  return Future<T>(new detail::FutureState<T>(fromProc));
}

/// Nim's asyncCheck: if `fut` fails, its exception is rethrown from the poll that runs the
/// callback, so a fire-and-forget coroutine cannot fail silently. Beyond Nim, this appends a
/// callback instead of replacing the ones the future has.
template <class T>
void asyncCheck(Future<T> fut) {
  if (fut.isNil()) throw ValueError("asyncCheck: Future is nil");
  fut.addCallback([](Future<T> f) {
    if (f.failed()) std::rethrow_exception(f.readError());
  });
}

namespace detail {

// The name, file and line of the function a coroutine frame belongs to. __builtin_FUNCTION,
// __builtin_FILE and __builtin_LINE (GCC, clang, MSVC: what std::source_location is made of,
// which clang 14's library lacks) in a default argument are evaluated where the promise is made,
// that is inside the coroutine, so a coroutine's future is named after its function, as Nim
// names an async proc's future. The line is the function's (GCC gives its closing brace, clang
// its name). The constructor is explicit so that no coroutine argument can be taken for it.
struct CoroutineName {
  explicit CoroutineName(const char* name = __builtin_FUNCTION(),
                         const char* file = __builtin_FILE(), int line = __builtin_LINE()) noexcept
      : value(name), file(file), line(line) {}
  const char* value;
  const char* file;
  int line;
};

// The coroutine side of Future<T>: the frame owns a reference to the result future, the body runs
// at once (initial_suspend never suspends) and the frame frees itself when the body ends.
template <class T>
struct PromiseBase : CoroutineCanceller {
  // Coroutine frames come from the thread's recycler too.
  static void* operator new(std::size_t size) { return allocateBlock(size); }
  static void operator delete(void* frame, std::size_t size) noexcept { freeBlock(frame, size); }

  explicit PromiseBase(CoroutineName name)
      : future(newStateFor(name.value, this)), file(name.file), line(name.line) {}
  PromiseBase(const PromiseBase&) = delete;
  PromiseBase& operator=(const PromiseBase&) = delete;
  // A frame destroyed while suspended (its dispatcher went away) leaves its future pending:
  // that future must not point back into the freed frame.
  ~PromiseBase() { stateOf(future).setCancelHook(CancelHook()); }

  Future<T> future;
  const char* file; // where the coroutine is defined, for its traceback frame
  int line;

  // The coroutine's future, made with its cancel hook pointing back at this frame.
  static Future<T> newStateFor(const char* name, CoroutineCanceller* frame) {
    auto* state = new FutureState<T>(name);
    state->setCancelHook(CancelHook::coroutine(frame));
    return Future<T>(state);
  }

  Future<T> get_return_object() const noexcept { return future; }
  std::suspend_never initial_suspend() const noexcept { return {}; }
  std::suspend_never final_suspend() const noexcept { return {}; }
  // The exception leaves the body: the coroutine's future fails with it, its traceback the
  // chain the error arrived with plus this coroutine's frame.
  void unhandled_exception() const {
    const CoroutineSite site{future.fromProc(), file, line};
    stateOf(future).fail(std::current_exception(), &site);
  }
};

template <class T>
struct Promise : PromiseBase<T> {
  explicit Promise(CoroutineName name = CoroutineName()) : PromiseBase<T>(name) {}
  template <class U>
  requires std::is_constructible_v<T, U&&>
  void return_value(U&& value) const { this->future.complete(std::forward<U>(value)); }
};

template <>
struct Promise<void> : PromiseBase<void> {
  explicit Promise(CoroutineName name = CoroutineName()) : PromiseBase<void>(name) {}
  void return_void() const { future.complete(); }
};

} // namespace detail

} // namespace asyncdispatch
