// poll and waitFor called from inside a callback that poll is running (a callSoon callback, a
// future callback, an addRead callback, a coroutine resumed by poll) are refused with ValueError
// (PassGuard): Nim lets them run the pass's keys and callbacks from the middle of their own
// dispatch. The refusal is an exception like any other: uncaught, it leaves the outer poll, and
// the next poll works.
#if !defined(_WIN32)
#include <sys/socket.h>
#endif

#include <string>
#include <vector>

#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

namespace {

const std::string kNested = "called from a callback that poll is running";

bool saysNested(const std::string& message) {
  return message.find(kNested) != std::string::npos;
}

// Runs `nested` and gives the message of the ValueError it threw ("" if it threw none).
template <class F>
std::string nestedValueError(F&& nested) {
  try {
    nested();
  } catch (const ValueError& e) {
    return e.what();
  }
  return std::string();
}

#if defined(_WIN32)
void rawSend(AsyncFD fd, const std::string& data) {
  REQUIRE(::send(static_cast<SOCKET>(fd), data.data(), static_cast<int>(data.size()), 0) ==
          static_cast<int>(data.size()));
}
#else
void rawSend(AsyncFD fd, const std::string& data) {
  REQUIRE(sendNoSigpipe(static_cast<int>(fd), data.data(), data.size()) ==
          static_cast<ssize_t>(data.size()));
}
#endif

// A coroutine resumed by poll that calls waitFor (or poll) in its body.
Future<int> waitsForInside(Future<int> first, Future<int> other) {
  co_await first;
  co_return waitFor(other);
}

Future<int> catchesNestedPoll(Future<int> first, std::string* message) {
  co_await first;
  try {
    poll(0);
  } catch (const ValueError& e) {
    *message = e.what();
  }
  co_return 5;
}

} // namespace

TEST_CASE("nesting: poll from a callSoon callback throws ValueError saying so; the outer poll "
          "goes on") {
  std::string message;
  bool laterRan = false;
  callSoon([&message] { message = nestedValueError([] { poll(0); }); });
  callSoon([&laterRan] { laterRan = true; }); // still queued while the first runs
  poll(0);
  CHECK_MESSAGE(saysNested(message), "message: " << message);
  CHECK(laterRan); // the same pass went on to the next callback
  CHECK(getGlobalDispatcher()->callbacks.empty());
  checkDispatcherEmpty();
}

TEST_CASE("nesting: waitFor from a callSoon callback throws ValueError saying so") {
  Future<int> never = newFuture<int>("never");
  std::string message;
  callSoon([&message, never] { message = nestedValueError([never] { (void)waitFor(never); }); });
  Future<void> timer = sleepAsync(60000); // something else pending while the callback runs
  poll(0);
  CHECK_MESSAGE(saysNested(message), "message: " << message);
  timer.cancel();
  checkDispatcherEmpty();
}

TEST_CASE("nesting: waitFor of a finished future from a callback only reads it (no poll)") {
  Future<int> done = newFuture<int>("done");
  done.complete(3);
  int got = 0;
  callSoon([&got, done] { got = waitFor(done); });
  poll(0);
  CHECK(got == 3);
  checkDispatcherEmpty();
}

TEST_CASE("nesting: poll from a callback with nothing else pending still says it was called from "
          "a callback") {
  // While the only callback runs, the queue is empty and nothing is armed: the nested poll must
  // still report the nesting, not "No handles or timers registered in dispatcher.".
  std::string message;
  callSoon([&message] { message = nestedValueError([] { poll(0); }); });
  poll(0);
  CHECK_MESSAGE(saysNested(message), "message: " << message);
  checkDispatcherEmpty();
}

TEST_CASE("nesting: uncaught, the ValueError leaves the outer poll; the rest stay queued and the "
          "next poll works") {
  std::vector<int> order;
  callSoon([&order] {
    order.push_back(1);
    poll(0);
    order.push_back(99); // never reached
  });
  callSoon([&order] { order.push_back(2); });
  std::string message;
  try {
    poll(0);
  } catch (const ValueError& e) {
    message = e.what();
  }
  CHECK_MESSAGE(saysNested(message), "message: " << message);
  CHECK(order == std::vector<int>{1});
  CHECK(getGlobalDispatcher()->callbacks.size() == 1); // the second waits for the next pass
  CHECK_NOTHROW(poll(0));
  CHECK(order == std::vector<int>{1, 2});
  // And the loop works as before: a timer, a callback, a coroutine.
  Future<void> timer = sleepAsync(1);
  settle(timer, 1000);
  checkDispatcherEmpty();
}

TEST_CASE("nesting: poll from a future callback throws ValueError out of the outer poll; the next "
          "poll works") {
  Future<int> fut = newFuture<int>("fut");
  bool otherCallbackRan = false;
  fut.addCallback([] { poll(0); });
  fut.addCallback([&otherCallbackRan] { otherCallbackRan = true; });
  fut.complete(1);
  std::string message;
  try {
    poll(0);
  } catch (const ValueError& e) {
    message = e.what();
  }
  CHECK_MESSAGE(saysNested(message), "message: " << message);
  CHECK_FALSE(otherCallbackRan);
  CHECK_NOTHROW(poll(0)); // the second callback was queued on its own: it runs now
  CHECK(otherCallbackRan);
  checkDispatcherEmpty();
}

TEST_CASE("nesting: poll from an addRead callback throws ValueError out of the outer poll; the "
          "next poll works") {
  auto [client, server] = connectedPair();
  int calls = 0;
  addRead(server, [&calls](AsyncFD) {
    ++calls;
    poll(0);
    return true;
  });
  rawSend(client, "x");
  std::string message;
  const Clock::time_point start = Clock::now();
  while (calls == 0 && msSince(start) < 2000) {
    try {
      poll(5);
    } catch (const ValueError& e) {
      message = e.what();
    }
  }
  CHECK(calls == 1);
  CHECK_MESSAGE(saysNested(message), "message: " << message);
  // The callback that threw is gone (as in Nim, a callback is taken out of the list while it
  // runs), and the descriptor works as before: the next poll serves a recv on it.
  CHECK(waitWithin(recv(server, 10), 1000) == "x");
  CHECK(calls == 1);
  CHECK(activeDescriptors() == 0);
  closeSocket(client);
  closeSocket(server);
  checkDispatcherEmpty();
}

TEST_CASE("nesting: after an addRead callback throws, its fd does not stay armed with nothing "
          "waiting") {
  // The callback takes the data, then throws: the fd is not readable any more, so no later
  // readiness can tidy up. No callback is left on the fd: it must not count as armed or pending
  // (or a later poll waits for nothing and runForever never ends with "No handles").
  auto [client, server] = connectedPair();
  addRead(server, [](AsyncFD fd) -> bool {
    char c;
#if defined(_WIN32)
    REQUIRE(::recv(static_cast<SOCKET>(fd), &c, 1, 0) == 1);
#else
    REQUIRE(::recv(static_cast<int>(fd), &c, 1, 0) == 1);
#endif
    throw IOError("callback failed");
  });
  rawSend(client, "x");
  CHECK_THROWS_WITH_AS(poll(1000), "callback failed", IOError);
  CHECK(activeDescriptors() == 0);
  CHECK_FALSE(hasPendingOperations());
  if (hasPendingOperations()) poll(0);
  CHECK(activeDescriptors() == 0); // not even a pass later
  closeSocket(client);
  closeSocket(server);
  checkDispatcherEmpty();
}

TEST_CASE("nesting: waitFor in a coroutine resumed by poll fails the coroutine with ValueError, "
          "not the outer poll") {
  // An exception in a coroutine body fails its future: it does not leave poll.
  Future<int> first = newFuture<int>("first");
  Future<int> other = newFuture<int>("other");
  Future<int> co = waitsForInside(first, other);
  first.complete(1);
  Future<void> timer = sleepAsync(60000); // something else pending
  CHECK_NOTHROW(poll(0));
  REQUIRE(co.finished());
  std::string message;
  try {
    co.read();
  } catch (const ValueError& e) {
    message = e.what();
  }
  CHECK_MESSAGE(saysNested(message), "message: " << message);
  CHECK(message.find("waitsForInside") != std::string::npos); // its async traceback
  timer.cancel();
  CHECK_NOTHROW(runDry());
  checkDispatcherEmpty();
}

TEST_CASE("nesting: a coroutine resumed by poll can catch the refusal of a nested poll and go "
          "on") {
  Future<int> first = newFuture<int>("first");
  std::string message;
  Future<int> co = catchesNestedPoll(first, &message);
  first.complete(1);
  Future<void> timer = sleepAsync(60000); // something else pending
  poll(0);
  CHECK_MESSAGE(saysNested(message), "message: " << message);
  REQUIRE(co.finished());
  CHECK(co.read() == 5);
  timer.cancel();
  checkDispatcherEmpty();
}
