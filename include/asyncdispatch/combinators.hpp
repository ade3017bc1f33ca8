// Nim's `and`, `or` and `all` over futures. Beyond Nim, they append their callbacks to the
// inputs (addCallback) instead of replacing the ones a user attached (callback=).
#pragma once

#include <concepts>
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "future.hpp"

namespace asyncdispatch {

/// Nim's `and`: completes when both have finished, fails as soon as either fails.
template <class A, class B>
Future<void> operator&&(Future<A> a, Future<B> b) {
  Future<void> ret = newFuture<void>("asyncdispatch.and");
  auto settle = [ret, a, b]() {
    if (ret.finished()) return;
    if (a.failed()) {
      ret.fail(a.readError());
    } else if (b.failed()) {
      ret.fail(b.readError());
    } else if (a.finished() && b.finished()) {
      ret.complete();
    }
  };
  a.addCallback(settle);
  b.addCallback(settle);
  return ret;
}

/// Nim's `or`: completes or fails with whichever input finishes first; the other is ignored.
template <class A, class B>
Future<void> operator||(Future<A> a, Future<B> b) {
  Future<void> ret = newFuture<void>("asyncdispatch.or");
  auto first = [ret](const FutureBase& f) {
    if (ret.finished()) return;
    if (f.failed()) {
      ret.fail(f.readError());
    } else {
      ret.complete();
    }
  };
  a.addCallback([first](Future<A> f) { first(f); });
  b.addCallback([first](Future<B> f) { first(f); });
  return ret;
}

/// Nim's `all`: the values in argument order once every future completed (`Future<void>` for
/// void futures); fails with the first failure; an empty list completes at once.
template <class T>
auto all(std::vector<Future<T>> futs) {
  using Result = std::conditional_t<std::is_void_v<T>, void, std::vector<T>>;
  struct Shared {
    std::vector<Future<T>> futs;
    Future<Result> ret = newFuture<Result>("asyncdispatch.all");
    std::size_t remaining = 0;
  };
  auto shared = std::make_shared<Shared>();
  shared->futs = std::move(futs);
  shared->remaining = shared->futs.size();
  Future<Result> ret = shared->ret;

  // The values move out of the futures that only all() holds (a move-only T works so); a future
  // the caller still holds gives a copy, or, for a move-only T, fails ret with read's ValueError.
  auto settle = [](Shared& s) {
    if constexpr (std::is_void_v<T>) {
      s.ret.complete();
    } else {
      std::vector<T> values;
      values.reserve(s.futs.size());
      try {
        for (Future<T>& f : s.futs)
          values.push_back(std::move(f).read());
      } catch (...) {
        s.ret.fail(std::current_exception());
        return;
      }
      s.ret.complete(std::move(values));
    }
  };
  if (shared->remaining == 0) {
    settle(*shared);
    return ret;
  }
  // The callbacks take no handle of their own, so that the vector's is the only one at the end.
  for (std::size_t i = 0; i < shared->futs.size(); ++i) {
    shared->futs[i].addCallback([shared, settle, i] {
      if (shared->ret.finished()) return;
      const Future<T>& done = shared->futs[i];
      if (done.failed()) {
        shared->ret.fail(done.readError());
      } else if (--shared->remaining == 0) {
        settle(*shared);
      }
    });
  }
  return ret;
}

/// Nim's `all(@[a, b])` with C++'s braces: `all({a, b})`.
template <class T>
auto all(std::initializer_list<Future<T>> futs) {
  return all(std::vector<Future<T>>(futs));
}

namespace detail {
// all(a, b, c) takes futures of one value type, as Nim's all(seq[Future[T]]) does: a tuple of
// mixed types would be a second combinator; `a && b`, or a co_await of each, serves them.
template <class First, class... Rest>
concept FuturesOfOneType = (std::same_as<Rest, First> && ...);
} // namespace detail

/// Nim's all, its futures given as arguments: `all(a, b, c)` is `all({a, b, c})`.
template <class T, class... Rest>
requires detail::FuturesOfOneType<Future<T>, Rest...>
auto all(Future<T> first, Rest... rest) {
  std::vector<Future<T>> futs;
  futs.reserve(1 + sizeof...(rest));
  futs.push_back(std::move(first));
  (futs.push_back(std::move(rest)), ...);
  return all(std::move(futs));
}

} // namespace asyncdispatch
