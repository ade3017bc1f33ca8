// How a time reaches the loop when it is not Nim's int of milliseconds: a std::chrono::duration
// (sleepAsync(50ms), withTimeout(f, 2s)) or a count of milliseconds of any other integer type
// (sleepAsync(50L)). Each is converted without overflow: rounded up, so that nothing fires early,
// and clamped where the loop's own types end.
#pragma once

#include <chrono>
#include <climits>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <string>

#include "errors.hpp"

namespace asyncdispatch::detail {

template <class D>
inline constexpr bool isDuration = false;
template <class Rep, class Period>
inline constexpr bool isDuration<std::chrono::duration<Rep, Period>> = true;

// What the time-taking calls accept beside Nim's int (which keeps its own overload): any
// std::chrono::duration, or milliseconds as any other integer type (bool is not a count).
template <class D>
concept TimeSpan = isDuration<D> ||
    (std::integral<D> && !std::same_as<D, int> && !std::same_as<D, bool>);

// The span as a duration: an integer counts milliseconds, as Nim's int does.
template <TimeSpan D>
constexpr auto asDuration(D span) noexcept {
  if constexpr (isDuration<D>) {
    return span;
  } else {
    return std::chrono::duration<D, std::milli>(span);
  }
}

// The longest delay a timer takes, about 31 years, as sleepAsync(double) clamps: a deadline
// this far from now cannot overflow the clock.
inline constexpr std::chrono::nanoseconds kLongestDelay{1'000'000'000'000'000'000};

// A timer's delay (sleepAsync, withTimeout, wait) at the timers' resolution: rounded up, clamped
// to kLongestDelay either way. The range is checked in long double, which no count overflows,
// before an exact integer conversion. ValueError naming op for a NaN.
template <TimeSpan D>
std::chrono::nanoseconds delayOf(const char* op, D span) {
  const auto delay = asDuration(span);
  using Rep = typename decltype(delay)::rep;
  const long double ns = std::chrono::duration<long double, std::nano>(delay).count();
  if (std::isnan(ns)) throw ValueError(std::string(op) + ": the delay is NaN");
  if (ns >= static_cast<long double>(kLongestDelay.count())) return kLongestDelay;
  if (ns <= -static_cast<long double>(kLongestDelay.count())) return -kLongestDelay;
  if constexpr (std::chrono::treat_as_floating_point_v<Rep>) {
    return std::chrono::nanoseconds(static_cast<std::int64_t>(std::ceil(ns)));
  } else {
    return std::chrono::ceil<std::chrono::nanoseconds>(delay);
  }
}

// A span in whole milliseconds, rounded up, saturated just past int's range (so that a caller
// can tell "more than an int holds" from INT_MAX). ValueError naming op for a NaN.
template <TimeSpan D>
long long millisecondsOf(const char* op, D span) {
  const auto timeout = asDuration(span);
  using Rep = typename decltype(timeout)::rep;
  constexpr long long kBeyond = static_cast<long long>(INT_MAX) + 1;
  const long double ms = std::chrono::duration<long double, std::milli>(timeout).count();
  if (std::isnan(ms)) throw ValueError(std::string(op) + ": the timeout is NaN");
  if (ms >= static_cast<long double>(kBeyond)) return kBeyond;
  if (ms <= -static_cast<long double>(kBeyond)) return -kBeyond;
  if constexpr (std::chrono::treat_as_floating_point_v<Rep>) {
    return static_cast<long long>(std::ceil(ms));
  } else {
    return std::chrono::ceil<std::chrono::milliseconds>(timeout).count();
  }
}

// The timeout of poll and drain as their int: beyond an int's milliseconds (24.8 days) is -1, no
// limit, which never ends a wait early. A negative integer is Nim's -1 too; a negative duration
// is a time already past, so it waits for nothing (as asio's run_for does).
template <TimeSpan D>
int loopTimeoutOf(const char* op, D span) {
  const long long ms = millisecondsOf(op, span);
  if (ms > INT_MAX) return -1;
  if (ms < 0) return isDuration<D> ? 0 : -1;
  return static_cast<int>(ms);
}

} // namespace asyncdispatch::detail
