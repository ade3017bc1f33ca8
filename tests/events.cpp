// AsyncEvent: newAsyncEvent, trigger (also from other threads), addEvent, unregister(ev) and
// close(ev) over the selector's user events (eventfd on Linux; on Windows an event handle that a
// thread-pool wait watches).
#if !defined(_WIN32)
#include <fcntl.h>
#endif

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

namespace {

// The descriptors of the User keys the global dispatcher holds (on Windows, the event handles
// its waits watch).
std::vector<int> userKeys() {
  std::vector<int> keys;
#if defined(_WIN32)
  for (const auto& [fd, key] : getGlobalDispatcher()->waits) {
    if (key.events.contains(Event::User)) keys.push_back(static_cast<int>(fd));
  }
#else
  for (const auto& key : getIoHandler(getGlobalDispatcher()).fds) {
    if (key.fd != InvalidIdent && key.events.contains(Event::User)) keys.push_back(key.fd);
  }
#endif
  return keys;
}

} // namespace

TEST_CASE("trigger: three triggers before a dispatch coalesce into one call") {
  AsyncEvent ev = newAsyncEvent();
  int calls = 0;
  addEvent(ev, [&](AsyncFD) {
    ++calls;
    return false;
  });
  trigger(ev);
  trigger(ev);
  trigger(ev);
  poll(0);
  CHECK(calls == 1);
  poll(0);
  poll(0);
  CHECK(calls == 1);
  unregister(ev);
  close(ev);
  checkDispatcherEmpty();
}

TEST_CASE("addEvent: a callback returning false stays armed and runs once per trigger") {
  AsyncEvent ev = newAsyncEvent();
  int calls = 0;
  addEvent(ev, [&](AsyncFD) {
    ++calls;
    return false;
  });
  CHECK(activeDescriptors() == 1);
  CHECK(hasPendingOperations());
  for (int round = 1; round <= 3; ++round) {
    trigger(ev);
    pollUntil([&] { return calls == round; });
    CHECK(calls == round);
    poll(0); // no trigger, no call
    CHECK(calls == round);
  }
  unregister(ev);
  CHECK_FALSE(hasPendingOperations());
  close(ev);
  checkDispatcherEmpty();
}

TEST_CASE("addEvent: a callback returning true unregisters the event, which stays open") {
  AsyncEvent ev = newAsyncEvent();
  AsyncFD key{-1};
  addEvent(ev, [&](AsyncFD fd) {
    key = fd;
    return true;
  });
  REQUIRE(userKeys().size() == 1);
  const int fd = userKeys()[0];
  trigger(ev);
  pollUntil([&] { return key != AsyncFD(-1); });
  CHECK(key == AsyncFD(fd));
  CHECK(userKeys().empty());
  CHECK_FALSE(hasPendingOperations());
  CHECK(isOpen(fd));
  trigger(ev); // still an open event: no error, and nobody is called
  // It can be watched again, and the pending trigger is seen.
  int again = 0;
  addEvent(ev, [&](AsyncFD) { return ++again > 0; });
  pollUntil([&] { return again > 0; });
  CHECK(again == 1);
  close(ev);
  CHECK_FALSE(isOpen(fd));
  checkDispatcherEmpty();
}

TEST_CASE("addEvent: watching an event twice throws ValueError naming addEvent") {
  AsyncEvent ev = newAsyncEvent();
  addEvent(ev, [](AsyncFD) { return true; });
  const std::string message = valueErrorOf([&] { addEvent(ev, [](AsyncFD) { return true; }); });
  CHECK(has(message, "addEvent"));
  CHECK(has(message, "already registered"));
  CHECK(userKeys().size() == 1); // the first registration is untouched
  unregister(ev);
  close(ev);
  checkDispatcherEmpty();
}

TEST_CASE("unregister: an event that is not registered throws ValueError naming unregister") {
  AsyncEvent ev = newAsyncEvent();
  std::string message = valueErrorOf([&] { unregister(ev); });
  CHECK(has(message, "unregister"));
  CHECK(has(message, "not registered"));
  addEvent(ev, [](AsyncFD) { return true; });
  unregister(ev);
  message = valueErrorOf([&] { unregister(ev); });
  CHECK(has(message, "not registered"));
  close(ev);
  checkDispatcherEmpty();
}

TEST_CASE("trigger: after close throws ValueError naming trigger") {
  AsyncEvent ev = newAsyncEvent();
  AsyncEvent copy = ev;
  close(ev);
  CHECK_THROWS_WITH_AS(trigger(ev), "trigger: the AsyncEvent is closed", ValueError);
  CHECK_THROWS_WITH_AS(trigger(copy), "trigger: the AsyncEvent is closed", ValueError);
  CHECK_THROWS_WITH_AS(addEvent(ev, [](AsyncFD) { return true; }),
                       "addEvent: the AsyncEvent is closed", ValueError);
  CHECK_THROWS_WITH_AS(unregister(ev), "unregister: the AsyncEvent is closed", ValueError);
  close(copy); // closing twice does nothing
  checkDispatcherEmpty();
}

TEST_CASE("AsyncEvent: a nil event is refused by every call") {
  AsyncEvent nil;
  CHECK(nil.isNil());
  CHECK_THROWS_WITH_AS(trigger(nil), "trigger: AsyncEvent is nil", ValueError);
  CHECK_THROWS_WITH_AS(addEvent(nil, [](AsyncFD) { return true; }), "addEvent: AsyncEvent is nil",
                       ValueError);
  CHECK_THROWS_WITH_AS(unregister(nil), "unregister: AsyncEvent is nil", ValueError);
  CHECK_THROWS_WITH_AS(close(nil), "close: AsyncEvent is nil", ValueError);
  AsyncEvent ev = newAsyncEvent();
  CHECK_FALSE(ev.isNil());
  AsyncEvent copy = ev;
  CHECK(copy == ev);
  CHECK_FALSE(copy == newAsyncEvent());
  close(ev);
  checkDispatcherEmpty();
}

TEST_CASE("close: a watched event is unregistered before it is closed (beyond Nim)") {
  AsyncEvent ev = newAsyncEvent();
  int calls = 0;
  addEvent(ev, [&](AsyncFD) { return ++calls > 0; });
  const int fd = userKeys().at(0);
  close(ev);
  CHECK(userKeys().empty());
  CHECK_FALSE(hasPendingOperations());
  CHECK_FALSE(isOpen(fd));
  CHECK(calls == 0);
  checkDispatcherEmpty();
}

TEST_CASE("addEvent: a watched event stays open when every handle is dropped") {
  int calls = 0;
  {
    AsyncEvent ev = newAsyncEvent();
    addEvent(ev, [&](AsyncFD) { return ++calls > 0; });
  }
  REQUIRE(userKeys().size() == 1);
  const int fd = userKeys()[0];
  CHECK(isOpen(fd));
  CHECK(hasPendingOperations());
  // Only the key holds it now: unregistering by descriptor releases and closes it. The
  // handler is not an operation to fail, so it is not called (as in Nim).
  unregister(AsyncFD(fd));
  CHECK_FALSE(isOpen(fd));
  CHECK(calls == 0);
  checkDispatcherEmpty();
}

TEST_CASE("trigger: 100 events triggered before a pass all fire, each once") {
  constexpr int kEvents = 100; // more than the 64 keys one selectInto reports
  std::vector<AsyncEvent> events;
  std::vector<int> calls(kEvents, 0);
  for (int i = 0; i < kEvents; ++i) {
    events.push_back(newAsyncEvent());
    addEvent(events.back(), [&calls, i](AsyncFD) {
      ++calls[i];
      return true;
    });
  }
  CHECK(activeDescriptors() == kEvents);
  for (const AsyncEvent& ev : events)
    trigger(ev);
  drain(5000);
  for (int i = 0; i < kEvents; ++i)
    CHECK(calls[i] == 1);
  CHECK(userKeys().empty());
  for (const AsyncEvent& ev : events)
    close(ev);
  checkDispatcherEmpty();
}

TEST_CASE("trigger: from another thread 10,000 times in a ping-pong handshake, none is lost") {
  // Each side triggers the other's event and waits for the answer before it triggers again, so
  // no two triggers coalesce: a lost trigger stalls the exchange and fails the counts. The
  // deadline only bounds a stall: under Wine on a loaded machine a round can take 2 ms.
  constexpr int kRounds = 10000;
  constexpr double kDeadlineMs = 60000;
  AsyncEvent ping = newAsyncEvent(); // watched here, triggered by the worker
  AsyncEvent pong = newAsyncEvent(); // watched by the worker, triggered here
  int pings = 0;
  addEvent(ping, [&](AsyncFD) {
    ++pings;
    trigger(pong);
    return pings == kRounds;
  });
  std::atomic<int> pongs{0};
  std::atomic<bool> workerEmpty{false};
  std::thread worker([&] {
    // The worker has its own dispatcher (the global one is per thread).
    addEvent(pong, [&](AsyncFD) {
      const int n = ++pongs;
      if (n < kRounds) trigger(ping);
      return n == kRounds;
    });
    trigger(ping);
    const Clock::time_point start = Clock::now();
    while (hasPendingOperations() && msSince(start) < kDeadlineMs)
      poll(100);
    workerEmpty = !hasPendingOperations();
  });
  const Clock::time_point start = Clock::now();
  while (pings < kRounds && msSince(start) < kDeadlineMs)
    poll(100);
  worker.join();
  CHECK(pings == kRounds);
  CHECK(pongs == kRounds);
  CHECK(workerEmpty);
  close(ping);
  close(pong);
  checkDispatcherEmpty();
}

TEST_CASE("trigger: a burst of triggers from another thread wakes a dispatcher blocked in poll") {
  AsyncEvent ev = newAsyncEvent();
  std::atomic<bool> done{false};
  int calls = 0;
  addEvent(ev, [&](AsyncFD) {
    ++calls;
    return done.load();
  });
  std::thread worker([ev, &done] {
    for (int i = 0; i < 1000; ++i)
      trigger(ev);
    done = true;
    trigger(ev); // the one after `done`: it must reach the callback
  });
  const Clock::time_point start = Clock::now();
  while (hasPendingOperations() && msSince(start) < 5000)
    poll(1000);
  worker.join();
  CHECK(calls >= 1);
  CHECK_FALSE(hasPendingOperations());
  close(ev);
  checkDispatcherEmpty();
}
