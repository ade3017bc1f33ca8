// Nim's and, or and all over futures, and that they keep the callbacks a user attached.
#include "support.hpp"

#include <memory>
#include <string>
#include <vector>

using namespace asyncdispatch;
using namespace testsupport;

TEST_CASE("and: completes only once both futures have finished") {
  Future<int> a = newFuture<int>();
  Future<std::string> b = newFuture<std::string>();
  Future<void> both = a && b;
  a.complete(1);
  poll(0);
  CHECK_FALSE(both.finished());
  b.complete(std::string("two"));
  poll(0);
  CHECK(both.finished());
  CHECK_FALSE(both.failed());
  checkDispatcherEmpty();
}

TEST_CASE("and: fails as soon as either future fails, with that exception") {
  Future<int> a = newFuture<int>();
  Future<void> b = newFuture<void>();
  Future<void> both = a && b;
  b.fail(IOError("b broke"));
  poll(0);
  REQUIRE(both.failed()); // a is still pending
  CHECK_THROWS_WITH_AS(both.read(), "b broke", IOError);
  a.complete(1);
  CHECK_NOTHROW(poll(0)); // the late completion changes nothing
  CHECK(both.failed());
  checkDispatcherEmpty();
}

TEST_CASE("and: futures that already finished complete it on the next poll") {
  Future<int> a = newFuture<int>();
  Future<int> b = newFuture<int>();
  a.complete(1);
  b.complete(2);
  Future<void> both = a && b;
  poll(0);
  CHECK(both.finished());
  CHECK_FALSE(both.failed());
  checkDispatcherEmpty();
}

TEST_CASE("and: keeps the callbacks the user attached before (beyond Nim)") {
  Future<int> a = newFuture<int>();
  Future<int> b = newFuture<int>();
  std::vector<std::string> ran;
  a.addCallback([&ran] { ran.push_back("a"); });
  b.addCallback([&ran] { ran.push_back("b"); });
  Future<void> both = a && b;
  a.complete(1);
  b.complete(2);
  poll(0);
  CHECK(both.finished());
  CHECK(ran == std::vector<std::string>{"a", "b"});
  checkDispatcherEmpty();
}

TEST_CASE("or: completes with the first future to finish") {
  Future<int> a = newFuture<int>();
  Future<void> b = newFuture<void>();
  Future<void> either = a || b;
  CHECK_FALSE(either.finished());
  b.complete();
  poll(0);
  CHECK(either.finished());
  CHECK_FALSE(either.failed());
  a.complete(1);
  poll(0);
  checkDispatcherEmpty();
}

TEST_CASE("or: a later failure of the other future is ignored") {
  Future<int> a = newFuture<int>();
  Future<int> b = newFuture<int>();
  Future<void> either = a || b;
  a.complete(1);
  poll(0);
  REQUIRE(either.finished());
  b.fail(IOError("too late"));
  CHECK_NOTHROW(poll(0));
  CHECK_FALSE(either.failed());
  checkDispatcherEmpty();
}

TEST_CASE("or: fails when the first future to finish failed") {
  Future<int> a = newFuture<int>();
  Future<int> b = newFuture<int>();
  Future<void> either = a || b;
  b.fail(IOError("first and failed"));
  poll(0);
  REQUIRE(either.failed());
  CHECK_THROWS_WITH_AS(either.read(), "first and failed", IOError);
  a.complete(1);
  CHECK_NOTHROW(poll(0));
  checkDispatcherEmpty();
}

TEST_CASE("or: keeps the callbacks the user attached before (beyond Nim)") {
  Future<int> a = newFuture<int>();
  Future<int> b = newFuture<int>();
  std::vector<std::string> ran;
  a.addCallback([&ran] { ran.push_back("a"); });
  b.addCallback([&ran] { ran.push_back("b"); });
  Future<void> either = a || b;
  b.complete(2);
  a.complete(1);
  poll(0);
  CHECK(either.finished());
  CHECK(ran == std::vector<std::string>{"b", "a"});
  checkDispatcherEmpty();
}

TEST_CASE("all: the values come in argument order even when completed out of order") {
  Future<int> a = newFuture<int>();
  Future<int> b = newFuture<int>();
  Future<int> c = newFuture<int>();
  Future<std::vector<int>> values = all(std::vector<Future<int>>{a, b, c});
  c.complete(3);
  poll(0);
  a.complete(1);
  poll(0);
  CHECK_FALSE(values.finished());
  b.complete(2);
  poll(0);
  REQUIRE(values.finished());
  CHECK(values.read() == std::vector<int>{1, 2, 3});
  checkDispatcherEmpty();
}

TEST_CASE("all: void futures give a Future<void> that completes when every one has") {
  std::vector<Future<void>> futs;
  for (int i = 0; i < 4; ++i)
    futs.push_back(newFuture<void>());
  Future<void> done = all(futs);
  for (int i = 3; i > 0; --i)
    futs[i].complete();
  poll(0);
  CHECK_FALSE(done.finished());
  futs[0].complete();
  poll(0);
  CHECK(done.finished());
  CHECK_FALSE(done.failed());
  checkDispatcherEmpty();
}

TEST_CASE("all: an empty list completes at once") {
  Future<std::vector<int>> values = all(std::vector<Future<int>>{});
  REQUIRE(values.finished());
  CHECK(values.read().empty());
  Future<void> done = all(std::vector<Future<void>>{});
  CHECK(done.finished());
  CHECK_FALSE(done.failed());
  checkDispatcherEmpty();
}

TEST_CASE("all: futures that already finished still count") {
  Future<std::string> a = newFuture<std::string>();
  Future<std::string> b = newFuture<std::string>();
  a.complete(std::string("x"));
  Future<std::vector<std::string>> values = all(std::vector<Future<std::string>>{a, b});
  b.complete(std::string("y"));
  poll(0);
  REQUIRE(values.finished());
  CHECK(values.read() == std::vector<std::string>{"x", "y"});
  checkDispatcherEmpty();
}

TEST_CASE("all: fails as soon as one future fails, whatever the others do later") {
  Future<int> a = newFuture<int>();
  Future<int> b = newFuture<int>();
  Future<int> c = newFuture<int>();
  Future<std::vector<int>> values = all(std::vector<Future<int>>{a, b, c});
  b.fail(IOError("b broke"));
  poll(0);
  REQUIRE(values.failed()); // a and c are still pending
  CHECK_THROWS_WITH_AS(values.read(), "b broke", IOError);
  a.complete(1);
  c.fail(IOError("c broke too"));
  CHECK_NOTHROW(poll(0));
  CHECK_THROWS_WITH_AS(values.read(), "b broke", IOError);
  checkDispatcherEmpty();
}

TEST_CASE("all: keeps the callbacks the user attached before") {
  Future<int> a = newFuture<int>();
  Future<int> b = newFuture<int>();
  std::vector<std::string> ran;
  a.addCallback([&ran] { ran.push_back("a"); });
  b.addCallback([&ran] { ran.push_back("b"); });
  Future<std::vector<int>> values = all(std::vector<Future<int>>{a, b});
  a.complete(1);
  b.complete(2);
  poll(0);
  CHECK(values.finished());
  CHECK(ran == std::vector<std::string>{"a", "b"});
  checkDispatcherEmpty();
}

namespace {

// Whether all(a, b) compiles for futures a and b.
template <class A, class B>
concept AllTakes = requires(A a, B b) {
  all(a, b);
};

} // namespace

// all(a, b) of one type is Nim's all; of mixed types it does not compile (a && b serves them).
static_assert(AllTakes<Future<int>, Future<int>>);
static_assert(AllTakes<Future<void>, Future<void>>);
static_assert(!AllTakes<Future<int>, Future<std::string>>);
static_assert(!AllTakes<Future<int>, Future<void>>);

TEST_CASE("all: takes its futures as arguments, all(a, b, c), values in argument order") {
  Future<int> a = newFuture<int>();
  Future<int> b = newFuture<int>();
  Future<int> c = newFuture<int>();
  Future<std::vector<int>> values = all(a, b, c);
  c.complete(3);
  b.complete(2);
  poll(0);
  CHECK_FALSE(values.finished());
  a.complete(1);
  poll(0);
  REQUIRE(values.finished());
  CHECK(values.read() == std::vector<int>{1, 2, 3});
  Future<std::vector<int>> one = all(a);
  poll(0);
  REQUIRE(one.finished());
  CHECK(one.read() == std::vector<int>{1});
  checkDispatcherEmpty();
}

TEST_CASE("all: takes a braced list, all({a, b}), for values and for void") {
  Future<std::string> a = newFuture<std::string>();
  Future<std::string> b = newFuture<std::string>();
  Future<std::vector<std::string>> values = all({a, b});
  b.complete(std::string("y"));
  a.complete(std::string("x"));
  poll(0);
  REQUIRE(values.finished());
  CHECK(values.read() == std::vector<std::string>{"x", "y"});

  Future<void> first = newFuture<void>();
  Future<void> second = newFuture<void>();
  Future<void> both = all({first, second});
  Future<void> bothAgain = all(first, second);
  first.complete();
  poll(0);
  CHECK_FALSE(both.finished());
  CHECK_FALSE(bothAgain.finished());
  second.fail(IOError("second broke"));
  poll(0);
  REQUIRE(both.failed());
  CHECK_THROWS_WITH_AS(both.read(), "second broke", IOError);
  CHECK_THROWS_WITH_AS(bothAgain.read(), "second broke", IOError);
  checkDispatcherEmpty();
}

namespace {
Future<std::unique_ptr<int>> boxLater(int value) {
  co_await sleepAsync(1);
  co_return std::make_unique<int>(value);
}
} // namespace

TEST_CASE("all: move-only values move out of the futures only all() holds") {
  std::vector<std::unique_ptr<int>> boxes = waitFor(all(boxLater(1), boxLater(2)));
  REQUIRE(boxes.size() == 2);
  CHECK(*boxes[0] == 1);
  CHECK(*boxes[1] == 2);

  // A handle the caller keeps could still read the value, which cannot be copied: all() fails.
  Future<std::unique_ptr<int>> kept = boxLater(3);
  Future<std::vector<std::unique_ptr<int>>> refused = all(kept);
  while (!refused.finished())
    poll(100);
  REQUIRE(refused.failed());
  CHECK_THROWS_AS(std::rethrow_exception(refused.readError()), ValueError);
  CHECK(*kept.read() == 3);
  checkDispatcherEmpty();
}
