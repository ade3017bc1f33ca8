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

template <class T>
class Future;

namespace detail {

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

// The part of a future's state that does not depend on T. Its memory comes from the thread's
// recycler (recycler.hpp).
struct FutureStateBase {
  static void* operator new(std::size_t size) { return allocateBlock(size); }
  static void operator delete(void* block, std::size_t size) noexcept { freeBlock(block, size); }

  explicit FutureStateBase(const char* from) noexcept : fromProc(from), id(nextFutureId()) {}
  FutureStateBase(const FutureStateBase&) = delete;
  FutureStateBase& operator=(const FutureStateBase&) = delete;
  virtual ~FutureStateBase() = default;

  // Nim's checkFinished: throws FutureError if the future already finished.
  void checkNotFinished() const {
    if (finished) throwFinishedTwice();
  }
  // Marks the future finished and moves its callbacks to the dispatcher's queue, in order.
  void finish() {
    finished = true;
    if (!callbacks.empty()) scheduleCallbacks();
  }
  void fail(std::exception_ptr e);
  // Nim's addCallback: queued at once if the future already finished.
  void addCallback(UniqueFunction<void()> cb);
  [[noreturn]] void throwFinishedTwice() const;
  // Callbacks never run inside complete/fail: each is queued on the dispatcher, in order.
  void scheduleCallbacks();
  // For FutureError's "Contents" line; only Future<std::string> has something to show.
  virtual void describeValue(std::string& out) const;

  std::uint32_t refs = 1; // not atomic: a future belongs to one thread's dispatcher
  bool finished = false;
  const char* fromProc;
  std::uint64_t id;
  std::exception_ptr error;
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

// The continuation of a suspended coroutine, stored as a future callback and linked into the
// dispatcher's suspended list until it runs. If it is destroyed without having run (the future it
// waited for was dropped unfinished), it destroys the coroutine frame, so nothing leaks.
class ResumeCoroutine : public SuspendedLink {
public:
  explicit ResumeCoroutine(std::coroutine_handle<> h) : handle_(h) {
    currentSuspendedList().push(*this);
  }
  ResumeCoroutine(ResumeCoroutine&& other) noexcept : handle_(std::exchange(other.handle_, {})) {
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
    if (handle_) handle_.destroy();
  }
  void operator()() {
    unlink();
    std::exchange(handle_, {}).resume();
  }
  // For SuspendedList::destroyAll: the frame, which this continuation no longer owns.
  std::coroutine_handle<> release() noexcept {
    unlink();
    return std::exchange(handle_, {});
  }

private:
  std::coroutine_handle<> handle_;
};

template <class T>
struct Promise;

} // namespace detail

// Nim's FutureBase: what every future has whatever its value type.
class FutureBase {
public:
  FutureBase() noexcept = default;
  FutureBase(const FutureBase& other) noexcept : state_(other.state_) {
    if (state_) ++state_->refs;
  }
  FutureBase(FutureBase&& other) noexcept : state_(std::exchange(other.state_, nullptr)) {}
  FutureBase& operator=(const FutureBase& other) noexcept {
    if (other.state_) ++other.state_->refs;
    release();
    state_ = other.state_;
    return *this;
  }
  FutureBase& operator=(FutureBase&& other) noexcept {
    if (this != &other) {
      release();
      state_ = std::exchange(other.state_, nullptr);
    }
    return *this;
  }
  ~FutureBase() { release(); }

  // Nim's finished: completed or failed.
  bool finished() const { return state().finished; }
  // Nim's failed: finished with an error.
  bool failed() const { return state().error != nullptr; }
  // Nim's readError: the stored exception; ValueError("No error in future.") if there is none.
  std::exception_ptr readError() const;
  // Nim's fail: finishes the future with an error and queues its callbacks.
  void fail(std::exception_ptr error) const;
  template <class E>
  requires(!std::is_same_v<std::remove_cvref_t<E>, std::exception_ptr>) void fail(
      const E& error) const {
    fail(std::make_exception_ptr(error));
  }

  // Nim's clearCallbacks: drops every callback the future has (a coroutine waiting on it is
  // destroyed with its continuation).
  void clearCallbacks() const { state().callbacks.clear(); }

  // The name given to newFuture (or the coroutine's), and the creation-order id, as Nim reports.
  const char* fromProc() const { return state().fromProc; }
  std::uint64_t id() const { return state().id; }
  // True for a default-constructed handle, which refers to no future (Nim's nil).
  bool isNil() const noexcept { return state_ == nullptr; }

protected:
  explicit FutureBase(detail::FutureStateBase* adopted) noexcept : state_(adopted) {}
  detail::FutureStateBase& state() const {
    if (!state_) throwNil();
    return *state_;
  }
  [[noreturn]] static void throwNil();

  detail::FutureStateBase* state_ = nullptr;

private:
  void release() noexcept {
    if (state_ && --state_->refs == 0) delete state_;
  }
};

template <class T>
class Future : public FutureBase {
public:
  using value_type = T;
  using promise_type = detail::Promise<T>;

  Future() noexcept = default; // refers to no future, like Nim's nil

  // Nim's complete(f, v) / complete(f): stores the value and queues the callbacks;
  // FutureError if the future already finished.
  template <class U>
  requires(!std::is_void_v<T> && std::is_constructible_v<T, U&&>) void complete(U&& value) const {
    auto& s = typedState();
    s.checkNotFinished();
    s.value.emplace(std::forward<U>(value));
    s.finish();
  }
  void complete() const requires std::is_void_v<T> {
    auto& s = typedState();
    s.checkNotFinished();
    s.finish();
  }

  // Nim's read: the value; rethrows the failure; ValueError("Future still in progress.") if
  // the future has not finished.
  T read() const { return readState(typedState()); }

  // Nim's addCallback: cb is void() or void(Future<T>); it runs from the dispatcher's callback
  // queue after the future finishes, in the order the callbacks were added.
  template <class F>
  void addCallback(F&& cb) const {
    state().addCallback(wrap(std::forward<F>(cb)));
  }
  // Nim's `callback=`: replaces every callback the future has with cb.
  template <class F>
  void callback(F&& cb) const {
    state().callbacks.clear();
    addCallback(std::forward<F>(cb));
  }

  auto operator co_await() const {
    struct Awaiter {
      detail::FutureState<T>* s;
      bool await_ready() const noexcept { return s->finished; }
      void await_suspend(std::coroutine_handle<> h) const {
        s->callbacks.push(detail::ResumeCoroutine(h));
      }
      T await_resume() const { return readState(*s); }
    };
    return Awaiter{&typedState()};
  }

private:
  template <class U>
  friend Future<U> newFuture(const char* fromProc);

  explicit Future(detail::FutureState<T>* adopted) noexcept : FutureBase(adopted) {}
  detail::FutureState<T>& typedState() const {
    return static_cast<detail::FutureState<T>&>(state());
  }

  static T readState(const detail::FutureState<T>& s) {
    if (s.error) std::rethrow_exception(s.error);
    if (!s.finished) throw ValueError("Future still in progress.");
    if constexpr (!std::is_void_v<T>) return *s.value;
  }

  template <class F>
  detail::UniqueFunction<void()> wrap(F&& cb) const {
    if constexpr (std::is_invocable_v<F&, Future<T>>) {
      return [self = *this, f = std::forward<F>(cb)]() mutable { f(self); };
    } else {
      static_assert(std::is_invocable_v<F&>, "a future callback is void() or void(Future<T>)");
      return detail::UniqueFunction<void()>(std::forward<F>(cb));
    }
  }
};

// Nim's newFuture[T](fromProc): a pending future; fromProc names it in errors and dumps.
template <class T>
Future<T> newFuture(const char* fromProc = "unspecified") {
  return Future<T>(new detail::FutureState<T>(fromProc));
}

// Nim's asyncCheck: if `fut` fails, its exception is rethrown from the poll that runs the
// callback, so a fire-and-forget coroutine cannot fail silently. Beyond Nim, this appends a
// callback instead of replacing the ones the future has.
template <class T>
void asyncCheck(Future<T> fut) {
  if (fut.isNil()) throw ValueError("asyncCheck: Future is nil");
  fut.addCallback([](Future<T> f) {
    if (f.failed()) std::rethrow_exception(f.readError());
  });
}

namespace detail {

// The name of the function a coroutine frame belongs to. __builtin_FUNCTION (GCC, clang, MSVC)
// in a default argument is evaluated where the promise is made, that is inside the coroutine, so
// a coroutine's future is named after its function, as Nim names an async proc's future. The
// constructor is explicit so that no coroutine argument can be taken for it.
struct CoroutineName {
  explicit CoroutineName(const char* name = __builtin_FUNCTION()) noexcept : value(name) {}
  const char* value;
};

// The coroutine side of Future<T>: the frame owns a reference to the result future, the body runs
// at once (initial_suspend never suspends) and the frame frees itself when the body ends.
template <class T>
struct PromiseBase {
  // Coroutine frames come from the thread's recycler too.
  static void* operator new(std::size_t size) { return allocateBlock(size); }
  static void operator delete(void* frame, std::size_t size) noexcept { freeBlock(frame, size); }

  explicit PromiseBase(CoroutineName name) : future(newFuture<T>(name.value)) {}

  Future<T> future;

  Future<T> get_return_object() const noexcept { return future; }
  std::suspend_never initial_suspend() const noexcept { return {}; }
  std::suspend_never final_suspend() const noexcept { return {}; }
  void unhandled_exception() const { future.fail(std::current_exception()); }
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
