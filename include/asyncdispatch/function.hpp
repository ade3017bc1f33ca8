// A move-only callable, the type behind every stored callback: future callbacks, the callSoon
// queue and the per-fd readCBs/writeCBs. std::function would do, but it must be copyable (so a
// callback could not own a coroutine or a unique_ptr) and it is 32 bytes that hold only two
// pointers of captures; this one is 32 bytes that hold three.
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace asyncdispatch::detail {

template <class Signature>
class UniqueFunction;

template <class R, class... Args>
class UniqueFunction<R(Args...)> {
public:
  // Room for a lambda that captures a future and two more words: every callback the library
  // makes for an operation that waits, and a suspended coroutine's continuation. Larger
  // captures go to the heap; every byte here is paid by each future and each waiting operation.
  static constexpr std::size_t kInlineSize = 3 * sizeof(void*);

  UniqueFunction() noexcept = default;
  UniqueFunction(std::nullptr_t) noexcept {}

  // Any callable, as std::function takes: a function's name decays to a pointer to it (a
  // function type cannot be stored), and a null function pointer makes an empty one.
  template <class F>
  requires(!std::is_same_v<std::decay_t<F>, UniqueFunction> &&
           std::is_invocable_r_v<R, std::decay_t<F>&, Args...>)
      UniqueFunction(F&& f) { // NOLINT: implicit, as std::function's is
    using Fn = std::decay_t<F>;
    if constexpr (std::is_pointer_v<std::remove_cvref_t<F>>) { // not a function's name: never null
      if (f == nullptr) return;
    }
    if constexpr (fitsInline<Fn>) {
      ::new (static_cast<void*>(storage_)) Fn(std::forward<F>(f));
      ops_ = &inlineOps<Fn>;
    } else {
      ::new (static_cast<void*>(storage_)) Fn*(new Fn(std::forward<F>(f)));
      ops_ = &heapOps<Fn>;
    }
  }

  UniqueFunction(UniqueFunction&& other) noexcept : ops_(other.ops_) {
    if (ops_) ops_->relocate(storage_, other.storage_);
    other.ops_ = nullptr;
  }

  UniqueFunction& operator=(UniqueFunction&& other) noexcept {
    if (this != &other) {
      reset();
      ops_ = other.ops_;
      if (ops_) ops_->relocate(storage_, other.storage_);
      other.ops_ = nullptr;
    }
    return *this;
  }

  UniqueFunction(const UniqueFunction&) = delete;
  UniqueFunction& operator=(const UniqueFunction&) = delete;
  ~UniqueFunction() { reset(); }

  explicit operator bool() const noexcept { return ops_ != nullptr; }

  // Which future the callable works for, if its type says so with a member servedFuture() (the
  // library's socket operations do), so that cancelling that future can find it in a list.
  const void* servedFuture() const noexcept { return ops_ ? ops_->serves(storage_) : nullptr; }

  // The stored callable if it is an inline `Fn`, else nullptr (std::function::target, for the
  // inline case only).
  template <class Fn>
  Fn* target() noexcept {
    if constexpr (fitsInline<Fn>) {
      if (ops_ == &inlineOps<Fn>) return std::launder(reinterpret_cast<Fn*>(storage_));
    }
    return nullptr;
  }

  R operator()(Args... args) { return ops_->call(storage_, std::forward<Args>(args)...); }

  void reset() noexcept {
    if (ops_) {
      const Ops* ops = std::exchange(ops_, nullptr);
      ops->destroy(storage_);
    }
  }

private:
  struct Ops {
    R (*call)(void* storage, Args&&... args);
    void (*relocate)(void* to, void* from) noexcept; // move into `to`, destroy `from`
    void (*destroy)(void* storage) noexcept;
    const void* (*serves)(const void* storage) noexcept;
  };

  template <class Fn>
  static const void* servedBy(const Fn& f) noexcept {
    if constexpr (requires { f.servedFuture(); }) {
      return f.servedFuture();
    } else {
      (void)f;
      return nullptr;
    }
  }

  template <class Fn>
  static constexpr bool fitsInline =
      sizeof(Fn) <= kInlineSize &&
      alignof(Fn) <= alignof(std::max_align_t) && std::is_nothrow_move_constructible_v<Fn>;

  template <class Fn>
  static constexpr Ops inlineOps{
      [](void* s, Args&&... args) -> R {
        return (*std::launder(static_cast<Fn*>(s)))(std::forward<Args>(args)...);
      },
      [](void* to, void* from) noexcept {
        Fn* f = std::launder(static_cast<Fn*>(from));
        ::new (to) Fn(std::move(*f));
        f->~Fn();
      },
      [](void* s) noexcept { std::launder(static_cast<Fn*>(s))->~Fn(); },
      [](const void* s) noexcept { return servedBy(*std::launder(static_cast<const Fn*>(s))); }};

  template <class Fn>
  static constexpr Ops heapOps{
      [](void* s, Args&&... args) -> R {
        return (**std::launder(static_cast<Fn**>(s)))(std::forward<Args>(args)...);
      },
      [](void* to, void* from) noexcept { ::new (to) Fn*(*std::launder(static_cast<Fn**>(from))); },
      [](void* s) noexcept { delete *std::launder(static_cast<Fn**>(s)); },
      [](const void* s) noexcept { return servedBy(**std::launder(static_cast<Fn* const*>(s))); }};

  alignas(void*) unsigned char storage_[kInlineSize];
  const Ops* ops_ = nullptr;
};

} // namespace asyncdispatch::detail
