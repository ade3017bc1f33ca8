// sleepAsync and the timers heap: never early, deadline order with ties in creation order, and
// how timers shape poll's wait; the std::chrono and integer forms of every call that takes a time.
#include "support.hpp"

#if !defined(_WIN32)
#include <sys/socket.h>
#endif

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <vector>

using namespace asyncdispatch;
using namespace testsupport;

namespace {

// Records the id of each timer future as its callback runs, i.e. the order the timers fired in.
void recordFiring(const Future<void>& timer, std::vector<std::uint64_t>& fired) {
  timer.addCallback([&fired](Future<void> f) { fired.push_back(f.id()); });
}

// The order the pending timers should fire in: by deadline, ties by creation (future id).
std::vector<std::uint64_t> expectedOrder() {
  std::vector<std::pair<Clock::time_point, std::uint64_t>> entries;
  for (const TimerEntry& t : getGlobalDispatcher()->timers)
    entries.emplace_back(t.finishAt, t.fut.id());
  std::sort(entries.begin(), entries.end());
  std::vector<std::uint64_t> ids;
  for (const auto& e : entries)
    ids.push_back(e.second);
  return ids;
}

} // namespace

TEST_CASE("sleepAsync: completes after the delay, never before") {
  const Clock::time_point start = Clock::now();
  Future<void> timer = sleepAsync(30);
  CHECK_FALSE(timer.finished());
  waitWithin(timer, 2000);
  const double elapsed = msSince(start);
  CHECK(elapsed >= 30);
  CHECK(elapsed < 1000);
  checkDispatcherEmpty();
}

TEST_CASE("sleepAsync: short delays are never cut short by the millisecond rounding") {
  for (int ms : {1, 2, 3, 7, 12}) {
    const Clock::time_point start = Clock::now();
    waitWithin(sleepAsync(ms), 2000);
    CHECK(msSince(start) >= ms);
  }
  checkDispatcherEmpty();
}

TEST_CASE("sleepAsync: a fractional delay in milliseconds is honoured") {
  const Clock::time_point start = Clock::now();
  waitWithin(sleepAsync(20.5), 2000);
  const double elapsed = msSince(start);
  CHECK(elapsed >= 20.5);
  CHECK(elapsed < 1000);
  checkDispatcherEmpty();
}

TEST_CASE("sleepAsync: 0 is due at once and completes on the next poll, not inline") {
  Future<void> timer = sleepAsync(0);
  CHECK_FALSE(timer.finished());
  poll(0);
  CHECK(timer.finished());
  checkDispatcherEmpty();
}

TEST_CASE("sleepAsync: a negative delay completes on the next poll") {
  Future<void> timer = sleepAsync(-5);
  Future<void> fractional = sleepAsync(-0.5);
  CHECK_FALSE(timer.finished());
  CHECK_FALSE(fractional.finished());
  poll(0);
  CHECK(timer.finished());
  CHECK(fractional.finished());
  checkDispatcherEmpty();
}

TEST_CASE("sleepAsync: a coroutine resumes after awaiting it") {
  struct Local {
    static Future<int> afterSleep() {
      co_await sleepAsync(5);
      co_return 1;
    }
  };
  CHECK(waitWithin(Local::afterSleep(), 2000) == 1);
  checkDispatcherEmpty();
}

TEST_CASE("sleepAsync: timers fire in deadline order whatever order they were made in") {
  std::vector<std::uint64_t> fired;
  std::vector<Future<void>> timers;
  std::vector<std::uint64_t> byDeadline(5);
  const int delays[] = {40, 10, 30, 0, 20};
  for (int i = 0; i < 5; ++i) {
    timers.push_back(sleepAsync(delays[i]));
    recordFiring(timers.back(), fired);
    byDeadline[delays[i] / 10] = timers.back().id();
  }
  waitWithin(all(timers), 2000);
  CHECK(fired == byDeadline);
  checkDispatcherEmpty();
}

TEST_CASE("sleepAsync: many due timers fire in one pass in deadline order") {
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> delay(-50, 0);
  std::vector<std::uint64_t> fired;
  std::vector<Future<void>> timers;
  for (int i = 0; i < 300; ++i) {
    timers.push_back(sleepAsync(delay(rng)));
    recordFiring(timers.back(), fired);
  }
  const std::vector<std::uint64_t> expected = expectedOrder();
  REQUIRE(expected.size() == 300);
  poll(0);
  CHECK(fired == expected);
  checkDispatcherEmpty();
}

TEST_CASE("sleepAsync: timers made in a tight loop with the same delay fire in creation order") {
  std::vector<std::uint64_t> fired;
  std::vector<std::uint64_t> created;
  std::vector<Future<void>> timers;
  for (int i = 0; i < 500; ++i) {
    timers.push_back(i % 2 == 0 ? sleepAsync(0) : sleepAsync(0.0));
    recordFiring(timers.back(), fired);
    created.push_back(timers.back().id());
  }
  poll(0);
  CHECK(fired == created);
  checkDispatcherEmpty();
}

TEST_CASE("sleepAsync: timers with exactly equal deadlines fire in creation order") {
  std::vector<std::uint64_t> fired;
  std::vector<std::uint64_t> created;
  std::vector<Future<void>> timers;
  for (int i = 0; i < 200; ++i) {
    timers.push_back(sleepAsync(10'000));
    recordFiring(timers.back(), fired);
    created.push_back(timers.back().id());
  }
  // The steady clock rarely gives two timers the same instant, so make every deadline equal.
  // Deadlines grew with creation, so the heap is also valid for the (equal, id) order.
  const Clock::time_point past = Clock::now() - std::chrono::milliseconds(1);
  for (TimerEntry& t : getGlobalDispatcher()->timers)
    t.finishAt = past;
  poll(0);
  CHECK(fired == created);
  checkDispatcherEmpty();
}

TEST_CASE("poll: returns early when a timer is due before the timeout") {
  const Clock::time_point start = Clock::now(); // before the timer: its 50 ms count from there
  Future<void> timer = sleepAsync(50);
  poll(2000);
  const double elapsed = msSince(start);
  CHECK(timer.finished());
  CHECK(elapsed >= 50);
  CHECK(elapsed < 1000);
  checkDispatcherEmpty();
}

TEST_CASE("poll: a timeout shorter than the next timer ends the wait without firing it") {
  Future<void> timer = sleepAsync(1000);
  const Clock::time_point start = Clock::now();
  poll(20);
  const double elapsed = msSince(start);
  CHECK_FALSE(timer.finished());
  CHECK(elapsed >= 20);
  CHECK(elapsed < 900);
  getGlobalDispatcher()->timers.clear(); // a pending timer cannot be cancelled yet
  checkDispatcherEmpty();
}

TEST_CASE("poll: -1 still wakes for a timer (beyond Nim)") {
  // If poll(-1) ignored the timer it would block forever, so a watchdog thread writes to a
  // socket the same poll is watching after 3 s: the test then fails instead of hanging.
  auto [client, server] = connectedPair();
  bool readable = false;
  addRead(server, [&readable](AsyncFD) {
    readable = true;
    return true;
  });
  std::mutex m;
  std::condition_variable cv;
  bool returned = false;
  std::thread watchdog([&, fd = client] {
    std::unique_lock<std::mutex> lock(m);
    if (!cv.wait_for(lock, std::chrono::seconds(3), [&] { return returned; }))
#if defined(_WIN32)
      (void)::send(static_cast<SOCKET>(fd), "x", 1, 0);
#else
      (void)sendNoSigpipe(static_cast<int>(fd), "x", 1);
#endif
  });
  const Clock::time_point start = Clock::now(); // before the timer: its 50 ms count from there
  Future<void> timer = sleepAsync(50);
  poll(-1);
  const double elapsed = msSince(start);
  {
    std::lock_guard<std::mutex> lock(m);
    returned = true;
  }
  cv.notify_one();
  watchdog.join();
  CHECK(timer.finished());
  CHECK_FALSE(readable);
  CHECK(elapsed >= 50);
  CHECK(elapsed < 1000);
  closeSocket(client);
  closeSocket(server); // fails the pending addRead callback once; that is all that is left
  if (!timer.finished()) waitWithin(timer, 2000);
  checkDispatcherEmpty();
}

TEST_CASE("waitFor: an overdue timer does not stall the pass (beyond Nim)") {
  const Clock::time_point start = Clock::now();
  waitFor(sleepAsync(-100));
  CHECK(msSince(start) < 400); // Nim waits out poll's 500 ms default here
  checkDispatcherEmpty();
}

TEST_CASE("waitFor: never wakes a timer early") {
  const Clock::time_point start = Clock::now();
  waitFor(sleepAsync(30));
  const double elapsed = msSince(start);
  CHECK(elapsed >= 30);
  CHECK(elapsed < 1000);
  checkDispatcherEmpty();
}

TEST_CASE("hasPendingOperations: true while a timer is pending, false once it fired") {
  CHECK_FALSE(hasPendingOperations());
  Future<void> timer = sleepAsync(10);
  CHECK(hasPendingOperations());
  CHECK(getGlobalDispatcher()->timers.size() == 1);
  waitWithin(timer, 2000);
  CHECK(getGlobalDispatcher()->timers.empty());
  CHECK_FALSE(hasPendingOperations());
  checkDispatcherEmpty();
}

TEST_CASE("withTimeout: true when the future finishes first, and its timer leaves the loop "
          "(beyond Nim)") {
  Future<int> fut = newFuture<int>();
  Future<bool> inTime = withTimeout(fut, 60000);
  callSoon([fut] { fut.complete(7); });
  CHECK(waitWithin(inTime) == true);
  CHECK(fut.read() == 7);
  CHECK(getGlobalDispatcher()->timers.empty()); // Nim keeps it for the whole 60 s
  CHECK_FALSE(hasPendingOperations());
  checkDispatcherEmpty();
}

TEST_CASE("withTimeout: false when the timer fires first, and the future keeps running") {
  Future<int> fut = newFuture<int>();
  const Clock::time_point start = Clock::now();
  Future<bool> inTime = withTimeout(fut, 20);
  CHECK(waitWithin(inTime) == false);
  CHECK(msSince(start) >= 20);
  CHECK_FALSE(fut.finished());
  fut.complete(1); // a late completion changes nothing
  runDry();
  CHECK(inTime.read() == false);
  checkDispatcherEmpty();
}

TEST_CASE("withTimeout: a failure of the future fails the result with the same type") {
  Future<int> fut = newFuture<int>();
  Future<bool> inTime = withTimeout(fut, 60000);
  fut.fail(IOError("boom"));
  settle(inTime);
  CHECK_THROWS_AS(inTime.read(), IOError);
  CHECK_FALSE(hasPendingOperations());
  checkDispatcherEmpty();
}

TEST_CASE("withTimeout: keeps the callbacks the user attached (beyond Nim)") {
  Future<int> fut = newFuture<int>();
  bool userCallbackRan = false;
  fut.addCallback([&] { userCallbackRan = true; });
  Future<bool> inTime = withTimeout(fut, 60000);
  fut.complete(1);
  CHECK(waitWithin(inTime) == true);
  CHECK(userCallbackRan);
  checkDispatcherEmpty();
}

TEST_CASE("withTimeout: a finished future completes it on the next poll, not inline") {
  Future<int> done = newFuture<int>();
  done.complete(1);
  Future<bool> inTime = withTimeout(done, 60000);
  CHECK_FALSE(inTime.finished());
  poll(0);
  REQUIRE(inTime.finished());
  CHECK(inTime.read() == true);
  checkDispatcherEmpty();
}

TEST_CASE("withTimeout: many futures that finish at once leave the timers heap where it was "
          "(beyond Nim)") {
  Future<int> done = newFuture<int>();
  done.complete(1);
  std::size_t largest = 0;
  for (int i = 1; i <= 100000; ++i) {
    (void)withTimeout(done, 60000);
    if (i % 1000 == 0) {
      poll(0);
      largest = std::max(largest, getGlobalDispatcher()->timers.size());
    }
  }
  runDry();
  // At most the timers of two batches live at once: the dead are dropped as they pile up.
  CHECK(largest <= 2000);
  CHECK(getGlobalDispatcher()->timers.size() <= 1);
  CHECK_FALSE(hasPendingOperations());
  getGlobalDispatcher()->timers.clear();
  getGlobalDispatcher()->cancelledTimers = 0;
  checkDispatcherEmpty();
}

TEST_CASE("withTimeout: a nil future throws ValueError") {
  CHECK_THROWS_AS(withTimeout(Future<int>(), 10), ValueError);
  checkDispatcherEmpty();
}

TEST_CASE("sleepAsync: takes a std::chrono duration, never early, also below a millisecond") {
  using namespace std::chrono_literals;
  const Clock::time_point start = Clock::now();
  waitWithin(sleepAsync(20ms), 2000);
  CHECK(msSince(start) >= 20);
  for (const std::chrono::microseconds delay : {1us, 500us, 1500us, 2001us}) {
    const Clock::time_point from = Clock::now();
    waitWithin(sleepAsync(delay), 2000);
    CHECK(Clock::now() - from >= delay);
  }
  const Clock::time_point fromSeconds = Clock::now();
  waitWithin(sleepAsync(std::chrono::duration<double>(0.0125)), 2000); // 12.5 ms as seconds
  CHECK(msSince(fromSeconds) >= 12.5);
  checkDispatcherEmpty();
}

TEST_CASE("sleepAsync: milliseconds of any integer type (long was ambiguous)") {
  const Clock::time_point start = Clock::now();
  Future<void> timers[] = {sleepAsync(3L),
                           sleepAsync(3LL),
                           sleepAsync(3u),
                           sleepAsync(std::size_t{3}),
                           sleepAsync(std::int64_t{3}),
                           sleepAsync(static_cast<short>(3)),
                           sleepAsync(static_cast<unsigned char>(3)),
                           sleepAsync(3.0L)};
  for (const Future<void>& timer : timers)
    waitWithin(timer, 2000);
  CHECK(msSince(start) >= 3);
  checkDispatcherEmpty();
}

TEST_CASE("sleepAsync: a negative duration is due at once; a huge delay of any type is clamped "
          "to about 31 years, never overflowed; NaN throws ValueError") {
  using namespace std::chrono;
  Future<void> negative = sleepAsync(-5ms);
  Future<void> lowest = sleepAsync(hours::min());
  poll(0);
  CHECK(negative.finished());
  CHECK(lowest.finished());

  const Clock::time_point now = Clock::now();
  Future<void> huge[] = {sleepAsync(hours::max()),
                         sleepAsync(nanoseconds::max()),
                         sleepAsync(LLONG_MAX),
                         sleepAsync(ULLONG_MAX),
                         sleepAsync(duration<double>(1e300)),
                         sleepAsync(duration<double>(INFINITY))};
  Future<int> never = newFuture<int>();
  Future<bool> longTimeout = withTimeout(never, hours::max());
  for (const TimerEntry& t : getGlobalDispatcher()->timers) {
    CHECK(t.finishAt > now + hours(24 * 365 * 30)); // later than 30 years: no wrap to the past
    CHECK(t.finishAt - now <= nanoseconds(1'000'000'000'000'000'000) + seconds(10));
  }
  CHECK(getGlobalDispatcher()->timers.size() == std::size(huge) + 1);
  CHECK(valueErrorOf([] { (void)sleepAsync(duration<double, std::milli>(NAN)); }) ==
        "sleepAsync: the delay is NaN");
  // The race settles (its timer is cancelled) before the huge timers are dropped: a race whose
  // future is gone would otherwise be held only by its own timer's callback.
  never.complete(0);
  poll(0);
  CHECK(longTimeout.read());
  getGlobalDispatcher()->timers.clear();
  checkDispatcherEmpty();
}

TEST_CASE("withTimeout and wait: take a std::chrono duration or any integer type") {
  using namespace std::chrono_literals;
  Future<int> slow = newFuture<int>();
  const Clock::time_point start = Clock::now();
  CHECK(waitWithin(withTimeout(slow, 20ms)) == false);
  CHECK(msSince(start) >= 20);
  CHECK_FALSE(slow.finished()); // withTimeout leaves it running

  Future<int> fast = newFuture<int>();
  Future<bool> inTime = withTimeout(fast, 60s);
  callSoon([fast] { fast.complete(1); });
  CHECK(waitWithin(inTime) == true);
  CHECK(waitWithin(withTimeout(slow, 2L)) == false);

  const Clock::time_point waitStart = Clock::now();
  CHECK(waitWithin(wait(slow, 1500us)) == false);
  CHECK(Clock::now() - waitStart >= 1500us);
  settle(slow);
  CHECK_THROWS_AS(slow.read(), CancelledError); // wait cancels it
  Future<int> other = newFuture<int>();
  CHECK(waitWithin(wait(other, 1u)) == false);
  CHECK(other.failed());
  checkDispatcherEmpty();
}

TEST_CASE("poll: takes a std::chrono duration, rounded up; a negative one waits for nothing and "
          "a huge one still wakes for a timer") {
  using namespace std::chrono_literals;
  Future<void> later = sleepAsync(60s);
  const Clock::time_point start = Clock::now();
  poll(1500us);
  CHECK(Clock::now() - start >= 1500us);
  poll(-5ms); // as -1 it would sleep until the 60 s timer
  poll(std::chrono::duration<double>(-1.0));
  poll(2L);
  CHECK_FALSE(later.finished());
  CHECK(msSince(start) < 30000);
  later.cancel();

  const Clock::time_point hugeStart = Clock::now();
  Future<void> soon = sleepAsync(20);
  poll(std::chrono::hours::max()); // no limit, as -1: the timer ends the wait
  CHECK(soon.finished());
  CHECK(msSince(hugeStart) >= 20);
  getGlobalDispatcher()->timers.clear();
  getGlobalDispatcher()->cancelledTimers = 0;
  checkDispatcherEmpty();
}

TEST_CASE("drain: takes a std::chrono duration; a negative one is one pass that waits for "
          "nothing") {
  using namespace std::chrono_literals;
  Future<void> later = sleepAsync(60s);
  const Clock::time_point start = Clock::now();
  drain(30ms);
  CHECK(msSince(start) >= 30);
  drain(-1ms); // as -1 it would run until the 60 s timer
  CHECK_FALSE(later.finished());
  CHECK(msSince(start) < 30000);
  later.cancel();
  Future<void> soon = sleepAsync(10);
  drain(10s);
  CHECK(soon.finished());
  getGlobalDispatcher()->timers.clear();
  getGlobalDispatcher()->cancelledTimers = 0;
  checkDispatcherEmpty();
}
