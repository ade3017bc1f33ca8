// sleepAsync and the timers heap: never early, deadline order with ties in creation order, and
// how timers shape poll's wait.
#include "support.hpp"

#if !defined(_WIN32)
#include <sys/socket.h>
#endif

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
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
