// Futures (Nim's asyncfutures): completing, failing, reading, callbacks, asyncCheck, nil.
#include "support.hpp"

#include <exception>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

using namespace asyncdispatch;
using namespace testsupport;

namespace {

// An exception type the library has never heard of, carrying a payload to prove it is the same
// object (not a copy sliced to a base) that comes back out.
struct Boom : std::runtime_error {
  explicit Boom(int c) : std::runtime_error("boom " + std::to_string(c)), code(c) {}
  int code;
};

// The message of the FutureError that `again` throws ("" if it throws none).
template <class F>
std::string futureErrorText(F again) {
  try {
    again();
  } catch (const FutureError& e) {
    return e.what();
  }
  return "";
}

} // namespace

TEST_CASE("newFuture: a new future is pending, not failed, and remembers fromProc") {
  Future<int> f = newFuture<int>("myProc");
  CHECK_FALSE(f.isNil());
  CHECK_FALSE(f.finished());
  CHECK_FALSE(f.failed());
  CHECK(std::string(f.fromProc()) == "myProc");
  CHECK(std::string(newFuture<void>().fromProc()) == "unspecified");
  checkDispatcherEmpty();
}

TEST_CASE("newFuture: ids count up in creation order") {
  Future<int> a = newFuture<int>();
  Future<void> b = newFuture<void>();
  Future<std::string> c = newFuture<std::string>();
  CHECK(b.id() == a.id() + 1);
  CHECK(c.id() == b.id() + 1);
  checkDispatcherEmpty();
}

TEST_CASE("complete: the value is read back and the future is finished, not failed") {
  Future<std::string> f = newFuture<std::string>();
  f.complete(std::string("hello"));
  CHECK(f.finished());
  CHECK_FALSE(f.failed());
  CHECK(f.read() == "hello");
  CHECK(f.read() == "hello"); // reading does not consume
  checkDispatcherEmpty();
}

TEST_CASE("complete: a void future finishes and read returns") {
  Future<void> f = newFuture<void>();
  f.complete();
  CHECK(f.finished());
  CHECK_FALSE(f.failed());
  CHECK_NOTHROW(f.read());
  checkDispatcherEmpty();
}

TEST_CASE("complete: twice throws FutureError with Nim's message and keeps the first value") {
  Future<int> f = newFuture<int>("twiceProc");
  f.complete(1);
  const std::string msg = futureErrorText([&] { f.complete(2); });
  CHECK(msg.rfind("An attempt was made to complete a Future more than once", 0) == 0);
  CHECK(msg.find("Future ID: " + std::to_string(f.id())) != std::string::npos);
  CHECK(msg.find("Created in proc: twiceProc") != std::string::npos);
  CHECK(msg.find("Contents") == std::string::npos); // only Future<string> shows its contents
  CHECK(f.read() == 1);
  checkDispatcherEmpty();
}

TEST_CASE("complete: twice on a Future<std::string> names its contents in the FutureError") {
  Future<std::string> f = newFuture<std::string>("stringProc");
  f.complete(std::string("first value"));
  const std::string msg = futureErrorText([&] { f.complete(std::string("second")); });
  CHECK(msg.rfind("An attempt was made to complete a Future more than once", 0) == 0);
  CHECK(msg.find("Created in proc: stringProc") != std::string::npos);
  const auto contents = msg.find("Contents (string):");
  REQUIRE(contents != std::string::npos);
  CHECK(msg.find("first value", contents) != std::string::npos);
  CHECK(msg.find("second") == std::string::npos);
  CHECK(f.read() == "first value");
  checkDispatcherEmpty();
}

TEST_CASE("complete: a void future completed twice throws FutureError") {
  Future<void> f = newFuture<void>();
  f.complete();
  CHECK_THROWS_AS(f.complete(), FutureError);
  checkDispatcherEmpty();
}

TEST_CASE("fail: after complete throws FutureError and the future stays completed") {
  Future<int> f = newFuture<int>();
  f.complete(7);
  CHECK_THROWS_AS(f.fail(IOError("late")), FutureError);
  CHECK_FALSE(f.failed());
  CHECK(f.read() == 7);
  checkDispatcherEmpty();
}

TEST_CASE("complete: after fail throws FutureError and the future stays failed") {
  Future<int> f = newFuture<int>();
  f.fail(IOError("first"));
  CHECK_THROWS_AS(f.complete(1), FutureError);
  CHECK_THROWS_AS(f.fail(IOError("second")), FutureError);
  CHECK(f.failed());
  CHECK_THROWS_WITH_AS(f.read(), "first", IOError);
  checkDispatcherEmpty();
}

TEST_CASE("fail: a failed future is finished and failed") {
  Future<void> f = newFuture<void>();
  f.fail(IOError("x"));
  CHECK(f.finished());
  CHECK(f.failed());
  checkDispatcherEmpty();
}

TEST_CASE("fail: fail(const E&) keeps the exception's own type and contents") {
  Future<int> f = newFuture<int>();
  f.fail(Boom(42));
  bool caught = false;
  try {
    f.read();
  } catch (const Boom& e) {
    caught = true;
    CHECK(e.code == 42);
    CHECK(std::string(e.what()) == "boom 42");
  }
  CHECK(caught);
  checkDispatcherEmpty();
}

TEST_CASE("fail: fail(exception_ptr) rethrows the stored exception from read and readError") {
  Future<std::string> f = newFuture<std::string>();
  f.fail(std::make_exception_ptr(Boom(3)));
  CHECK_THROWS_AS(f.read(), Boom);
  std::exception_ptr e = f.readError();
  REQUIRE(e != nullptr);
  CHECK_THROWS_WITH_AS(std::rethrow_exception(e), "boom 3", Boom);
  checkDispatcherEmpty();
}

TEST_CASE("fail: an empty exception_ptr is refused with ValueError") {
  Future<int> f = newFuture<int>();
  CHECK_THROWS_AS(f.fail(std::exception_ptr()), ValueError);
  CHECK_FALSE(f.finished());
  checkDispatcherEmpty();
}

TEST_CASE("read: throws ValueError on an unfinished future") {
  Future<int> f = newFuture<int>();
  CHECK_THROWS_WITH_AS(f.read(), "Future still in progress.", ValueError);
  Future<void> v = newFuture<void>();
  CHECK_THROWS_WITH_AS(v.read(), "Future still in progress.", ValueError);
  checkDispatcherEmpty();
}

TEST_CASE("readError: throws ValueError when there is no error, finished or not") {
  Future<int> pending = newFuture<int>();
  CHECK_THROWS_WITH_AS(pending.readError(), "No error in future.", ValueError);
  Future<int> done = newFuture<int>();
  done.complete(1);
  CHECK_THROWS_WITH_AS(done.readError(), "No error in future.", ValueError);
  checkDispatcherEmpty();
}

TEST_CASE("finished: false until complete, true after; failed stays false") {
  Future<int> f = newFuture<int>();
  CHECK_FALSE(f.finished());
  f.complete(0);
  CHECK(f.finished());
  CHECK_FALSE(f.failed());
  checkDispatcherEmpty();
}

TEST_CASE("Future: copies share one state, as a Nim ref does") {
  Future<int> a = newFuture<int>();
  Future<int> b = a;
  CHECK(a.id() == b.id());
  b.complete(5);
  CHECK(a.finished());
  CHECK(a.read() == 5);
  checkDispatcherEmpty();
}

TEST_CASE("callback: replaces every callback the future had") {
  Future<int> f = newFuture<int>();
  std::vector<std::string> ran;
  f.addCallback([&ran] { ran.push_back("first"); });
  f.addCallback([&ran] { ran.push_back("second"); });
  f.callback([&ran] { ran.push_back("replacement"); });
  f.complete(1);
  poll(0);
  CHECK(ran == std::vector<std::string>{"replacement"});
  checkDispatcherEmpty();
}

TEST_CASE("addCallback: appends, and the callbacks run in the order they were added") {
  Future<int> f = newFuture<int>();
  std::vector<int> ran;
  for (int i = 0; i < 5; ++i)
    f.addCallback([&ran, i] { ran.push_back(i); });
  f.complete(1);
  poll(0);
  CHECK(ran == std::vector<int>{0, 1, 2, 3, 4});
  checkDispatcherEmpty();
}

TEST_CASE("addCallback: a callback taking the future receives the finished future") {
  Future<std::string> f = newFuture<std::string>("typed");
  std::string seen;
  std::uint64_t seenId = 0;
  f.addCallback([&](Future<std::string> done) {
    seen = done.read();
    seenId = done.id();
  });
  f.complete(std::string("value"));
  poll(0);
  CHECK(seen == "value");
  CHECK(seenId == f.id());
  checkDispatcherEmpty();
}

TEST_CASE("addCallback: runs for a failed future too, which it can inspect") {
  Future<void> f = newFuture<void>();
  bool sawFailure = false;
  f.addCallback([&](Future<void> done) { sawFailure = done.failed(); });
  f.fail(IOError("down"));
  poll(0);
  CHECK(sawFailure);
  checkDispatcherEmpty();
}

TEST_CASE("addCallback: on FutureBase, futures of mixed value types take one callback that "
          "receives each finished future, in the order they finish") {
  Future<int> number = newFuture<int>("number");
  Future<std::string> text = newFuture<std::string>("text");
  Future<void> done = newFuture<void>("done");
  const std::vector<FutureBase> mixed{number, text, done};
  std::vector<std::string> ran;
  int plain = 0;
  for (const FutureBase& f : mixed) {
    f.addCallback([&ran](FutureBase finished) {
      ran.push_back(std::string(finished.fromProc()) + (finished.failed() ? " failed" : " ok"));
    });
    f.addCallback([&plain] { ++plain; });
  }
  text.complete(std::string("t"));
  done.fail(IOError("down"));
  number.complete(1);
  poll(0);
  CHECK(ran == std::vector<std::string>{"text ok", "done failed", "number ok"});
  CHECK(plain == 3);
  checkDispatcherEmpty();
}

TEST_CASE("callback: on FutureBase replaces every callback the future had, those of Future<T> "
          "too") {
  Future<int> f = newFuture<int>("typed");
  std::vector<std::string> ran;
  f.addCallback([&ran](Future<int>) { ran.push_back("typed"); });
  const FutureBase base = f;
  base.callback([&ran](const FutureBase& finished) {
    ran.push_back(std::string("base ") + (finished.finished() ? "finished" : "pending"));
  });
  f.complete(3);
  poll(0);
  CHECK(ran == std::vector<std::string>{"base finished"});
  checkDispatcherEmpty();
}

TEST_CASE("asyncCheck: a failure is rethrown from poll with its own type") {
  Future<int> f = newFuture<int>();
  asyncCheck(f);
  f.fail(Boom(9));
  CHECK_THROWS_AS(poll(0), Boom);
  checkDispatcherEmpty();
}

TEST_CASE("asyncCheck: a future that already failed is rethrown from the next poll") {
  Future<void> f = newFuture<void>();
  f.fail(IOError("earlier"));
  CHECK_NOTHROW(asyncCheck(f)); // never at the call
  CHECK_THROWS_WITH_AS(poll(0), "earlier", IOError);
  checkDispatcherEmpty();
}

TEST_CASE("asyncCheck: a future that completes raises nothing") {
  Future<int> f = newFuture<int>();
  asyncCheck(f);
  f.complete(1);
  CHECK_NOTHROW(poll(0));
  checkDispatcherEmpty();
}

TEST_CASE("asyncCheck: keeps the callbacks the user attached (beyond Nim)") {
  Future<int> f = newFuture<int>();
  bool userRan = false;
  f.addCallback([&userRan] { userRan = true; });
  asyncCheck(f);
  f.complete(1);
  poll(0);
  CHECK(userRan);
  checkDispatcherEmpty();
}

TEST_CASE("asyncCheck: a nil future throws ValueError") {
  CHECK_THROWS_AS(asyncCheck(Future<int>()), ValueError);
  checkDispatcherEmpty();
}

TEST_CASE("Future: a default-constructed future is nil and every use throws ValueError") {
  Future<int> f;
  CHECK(f.isNil());
  CHECK_THROWS_AS(f.finished(), ValueError);
  CHECK_THROWS_AS(f.failed(), ValueError);
  CHECK_THROWS_AS(f.read(), ValueError);
  CHECK_THROWS_AS(f.readError(), ValueError);
  CHECK_THROWS_AS(f.complete(1), ValueError);
  CHECK_THROWS_AS(f.fail(IOError("x")), ValueError);
  CHECK_THROWS_AS(f.addCallback([] {}), ValueError);
  CHECK_THROWS_AS(f.callback([] {}), ValueError);
  Future<void> v;
  CHECK(v.isNil());
  CHECK_THROWS_AS(v.complete(), ValueError);
  checkDispatcherEmpty();
}

namespace {

// Counts its own destruction: a callback capturing one shows when the future's state is freed.
struct DestructionProbe {
  explicit DestructionProbe(int* count) : count(count) {}
  DestructionProbe(DestructionProbe&& other) noexcept
      : count(std::exchange(other.count, nullptr)) {}
  DestructionProbe& operator=(DestructionProbe&&) = delete;
  ~DestructionProbe() {
    if (count != nullptr) ++*count;
  }
  int* count;
};

} // namespace

TEST_CASE("addCallback: a pending future dropped by every handle is freed with its callbacks, "
          "also those that take the future (no reference cycle)") {
  int destroyed = 0;
  Future<bool> inTime;
  {
    Future<int> f = newFuture<int>("never finished");
    f.addCallback([probe = DestructionProbe(&destroyed)](Future<int>) {});
    asyncCheck(f);
    inTime = withTimeout(f, 60000);
  }
  CHECK(destroyed == 1);
  CHECK_FALSE(inTime.finished());
  inTime.cancel(); // takes its timer out; nothing reaches the freed future
  CHECK_THROWS_AS(inTime.read(), CancelledError);
  runDry();
  getGlobalDispatcher()->timers.clear(); // the cancelled timer's dead entry
  getGlobalDispatcher()->cancelledTimers = 0;
  checkDispatcherEmpty();
}

TEST_CASE("addCallback: a callback that takes the future still gets it after the last handle is "
          "dropped between finishing and the next poll") {
  int seen = -1;
  {
    Future<int> f = newFuture<int>();
    f.addCallback([&seen](Future<int> done) { seen = done.read(); });
    f.complete(7);
  }
  poll(0);
  CHECK(seen == 7);
  checkDispatcherEmpty();
}

TEST_CASE("withTimeout: cancelling the result after the input's callbacks were cleared (the race "
          "then lives only in the timer's callback) fails it once, without use after free") {
  Future<int> f = newFuture<int>();
  Future<bool> r = withTimeout(f, 1000);
  f.clearCallbacks();
  r.cancel();
  CHECK(r.failed());
  CHECK_THROWS_AS(r.read(), CancelledError);
  f.complete(1);
  runDry();
  checkDispatcherEmpty();
}

TEST_CASE("addCallback: a FutureBase callback holding the only handle is freed with a future "
          "dropped unfinished (no reference cycle)") {
  int destroyed = 0;
  {
    const FutureBase f = newFuture<int>("never finished");
    f.addCallback([probe = DestructionProbe(&destroyed)](FutureBase) {});
  }
  CHECK(destroyed == 1);
  checkDispatcherEmpty();
}
