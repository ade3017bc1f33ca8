// FutureStream (Nim's asyncstreams) and readAll: values in order, the end, failures, and the
// reads that wait for a producer.
#include <memory>
#include <string>
#include <utility>

#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

namespace {

// A producer that writes its pieces one poll apart, then completes the stream.
Future<void> produce(FutureStream<std::string> stream, std::vector<std::string> pieces) {
  for (std::string& piece : pieces) {
    co_await sleepAsync(0);
    co_await stream.write(std::move(piece));
  }
  stream.complete();
}

} // namespace

TEST_CASE("FutureStream: read gives the written values in order, then (false, T{})") {
  FutureStream<int> stream = newFutureStream<int>("test");
  CHECK(stream.write(1).finished());
  CHECK(stream.write(2).finished());
  CHECK(stream.len() == 2);
  stream.complete();
  CHECK_FALSE(stream.finished()); // Nim: finished means complete and empty
  CHECK(waitWithin(stream.read()) == std::pair<bool, int>(true, 1));
  CHECK(waitWithin(stream.read()) == std::pair<bool, int>(true, 2));
  CHECK(stream.finished());
  CHECK(waitWithin(stream.read()) == std::pair<bool, int>(false, 0));
  checkDispatcherEmpty();
}

TEST_CASE("FutureStream: a pending read is finished by the next write") {
  FutureStream<int> stream = newFutureStream<int>();
  Future<std::pair<bool, int>> next = stream.read();
  CHECK_FALSE(next.finished());
  stream.write(42);
  CHECK(next.finished()); // right after write returns, as in Nim
  CHECK(next.read() == std::pair<bool, int>(true, 42));
  runDry();
  checkDispatcherEmpty();
}

TEST_CASE("FutureStream: several pending reads are served in order (beyond Nim)") {
  FutureStream<int> stream = newFutureStream<int>();
  Future<std::pair<bool, int>> first = stream.read();
  Future<std::pair<bool, int>> second = stream.read();
  Future<std::pair<bool, int>> third = stream.read();
  stream.write(1);
  stream.write(2);
  stream.complete();
  CHECK(first.read() == std::pair<bool, int>(true, 1));
  CHECK(second.read() == std::pair<bool, int>(true, 2));
  CHECK(third.read() == std::pair<bool, int>(false, 0));
  runDry();
  checkDispatcherEmpty();
}

TEST_CASE("FutureStream: write after complete gives a failed future with Nim's message") {
  FutureStream<int> stream = newFutureStream<int>();
  stream.complete();
  Future<void> late = stream.write(1);
  REQUIRE(late.failed());
  CHECK_THROWS_WITH_AS(late.read(), "FutureStream is finished and so no longer accepts new data.",
                       ValueError);
  checkDispatcherEmpty();
}

TEST_CASE("FutureStream: fail makes reads fail with the same type, after the queued values") {
  FutureStream<int> stream = newFutureStream<int>();
  stream.write(1);
  stream.fail(std::make_exception_ptr(IOError("broken")));
  CHECK(stream.failed());
  CHECK(waitWithin(stream.read()) == std::pair<bool, int>(true, 1));
  Future<std::pair<bool, int>> after = stream.read();
  settle(after);
  CHECK_THROWS_AS(after.read(), IOError);
  CHECK_THROWS_AS(stream.complete(), ValueError); // Nim: "Trying to complete failed stream"
  checkDispatcherEmpty();
}

TEST_CASE("readAll: concatenates every piece once the stream completes") {
  FutureStream<std::string> stream = newFutureStream<std::string>();
  asyncCheck(produce(stream, {"he", "llo", ", ", "world"}));
  CHECK(waitWithin(readAll(stream)) == "hello, world");
  runDry();
  checkDispatcherEmpty();
}

TEST_CASE("readAll: fails when the stream fails") {
  FutureStream<std::string> stream = newFutureStream<std::string>();
  Future<std::string> all = readAll(stream);
  stream.write("partial");
  stream.fail(std::make_exception_ptr(IOError("cut off")));
  settle(all);
  CHECK_THROWS_AS(all.read(), IOError);
  checkDispatcherEmpty();
}

TEST_CASE("FutureStream: a default-constructed stream is nil and throws ValueError") {
  FutureStream<int> nil;
  CHECK_THROWS_AS(nil.read(), ValueError);
  CHECK_THROWS_AS(nil.write(1), ValueError);
  checkDispatcherEmpty();
}

namespace {
Future<int> sumBoxes(FutureStream<std::unique_ptr<int>> boxes) {
  int sum = 0;
  for (;;) {
    std::pair<bool, std::unique_ptr<int>> next = co_await boxes.read();
    if (!next.first) co_return sum;
    sum += *next.second;
  }
}
} // namespace

TEST_CASE("FutureStream: move-only values pass through to a coroutine that reads them") {
  FutureStream<std::unique_ptr<int>> boxes = newFutureStream<std::unique_ptr<int>>();
  Future<int> sum = sumBoxes(boxes);
  boxes.write(std::make_unique<int>(40));
  boxes.write(std::make_unique<int>(2));
  boxes.complete();
  CHECK(waitFor(sum) == 42);
  checkDispatcherEmpty();
}
