// Coroutines as Nim's {.async.}: when bodies run and suspend, how failures travel, that finished
// awaits use no stack, and that suspended coroutines are never leaked.
#include <thread>

#include "support.hpp"

#include <pthread.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

using namespace asyncdispatch;
using namespace testsupport;

namespace {

struct Boom : std::runtime_error {
  explicit Boom(int c) : std::runtime_error("boom"), code(c) {}
  int code;
};

using Log = std::vector<std::string>;

Future<int> returnsAtOnce(int v) {
  co_return v;
}

Future<void> voidAtOnce(int* counter) {
  ++*counter;
  co_return;
}

Future<int> logsAroundAwait(Log* log, Future<int> f) {
  log->push_back("start");
  const int v = co_await f;
  log->push_back("after " + std::to_string(v));
  co_return v + 1;
}

Future<int> throwsBeforeAwait(Future<int> f) {
  throw Boom(1);
  co_return co_await f; // never reached; makes this a coroutine
}

Future<int> throwsAfterAwait(Future<int> f) {
  const int v = co_await f;
  throw Boom(v);
}

Future<int> catchesBoom(Future<int> inner) {
  try {
    co_await inner;
  } catch (const Boom& e) {
    co_return e.code;
  }
  co_return -1;
}

Future<int> leaf(Future<int> f) {
  co_return co_await f * 2;
}
Future<int> middle(Future<int> f) {
  co_return co_await leaf(f) + 1;
}
Future<std::string> top(Future<int> f) {
  co_return "result " + std::to_string(co_await middle(f));
}

Future<int> awaitsShared(Future<int> f, int add) {
  co_return co_await f + add;
}

Future<void> awaitsNil() {
  co_await Future<int>();
}

// Awaiting a future that finished: a million times, so a recursion or a queued hop per await
// would show as a crash on the small stack or as a dispatcher full of callbacks.
Future<long long> sumFinished(Future<int> done, int n) {
  long long sum = 0;
  for (int i = 0; i < n; ++i)
    sum += co_await done;
  co_return sum;
}

Future<long long> sumImmediate(int n) {
  long long sum = 0;
  for (int i = 0; i < n; ++i)
    sum += co_await returnsAtOnce(i);
  co_return sum;
}

struct Tracer {
  bool* destroyed;
  ~Tracer() { *destroyed = true; }
};

// Waits on a future it does not hold: the caller owns it.
Future<int> waitsOnBorrowed(const Future<int>* f, bool* destroyed) {
  Tracer t{destroyed};
  co_return co_await *f;
}

// Waits on a future it holds itself (the usual way: a parameter).
Future<int> waitsOnOwned(Future<int> f, bool* destroyed) {
  Tracer t{destroyed};
  co_return co_await f;
}

// Runs fn on a thread whose stack is 256 KiB, so a stack that grows per iteration crashes.
template <class F>
void runOnSmallStack(F& fn) {
  pthread_attr_t attr;
  REQUIRE(pthread_attr_init(&attr) == 0);
  REQUIRE(pthread_attr_setstacksize(&attr, 256 * 1024) == 0);
  pthread_t thread;
  auto trampoline = [](void* arg) -> void* {
    (*static_cast<F*>(arg))();
    return nullptr;
  };
  REQUIRE(pthread_create(&thread, &attr, trampoline, &fn) == 0);
  pthread_join(thread, nullptr);
  pthread_attr_destroy(&attr);
}

// A value that counts its copies (moves are free), to see where a co_await copies.
struct Counted {
  Counted(int v, int* copies) : value(v), copies(copies) {}
  Counted(const Counted& other) : value(other.value), copies(other.copies) { ++*copies; }
  Counted(Counted&&) noexcept = default;
  Counted& operator=(const Counted&) = delete;
  Counted& operator=(Counted&&) = delete;
  ~Counted() = default;
  int value;
  int* copies;
};

Future<Counted> countedLater(int v, int* copies) {
  co_await sleepAsync(0);
  co_return Counted(v, copies);
}

Future<Counted> countedAtOnce(int v, int* copies) {
  co_return Counted(v, copies);
}

// Awaits futures that nothing else holds: a suspended coroutine, a finished one, a handle given
// up with std::move (which leaves it nil).
Future<int> awaitsOwnCounted(int* copies, bool* movedHandleNil) {
  const Counted a = co_await countedLater(1, copies);
  const Counted b = co_await countedAtOnce(2, copies);
  Future<Counted> named = countedLater(3, copies);
  const Counted c = co_await std::move(named);
  *movedHandleNil = named.isNil(); // co_await std::move(named) took the handle
  co_return a.value + b.value + c.value;
}

Future<int> awaitsNamedCounted(Future<Counted> shared) {
  const Counted got = co_await shared;
  co_return got.value;
}

Future<int> awaitsCopiedHandle(Future<Counted> shared) {
  const Counted got = co_await Future<Counted>(shared); // a temporary, but not the only handle
  co_return got.value;
}

Future<std::unique_ptr<int>> boxLater(int v) {
  co_await sleepAsync(0);
  co_return std::make_unique<int>(v);
}

Future<int> unboxes(int v) {
  const std::unique_ptr<int> box = co_await boxLater(v);
  co_return *box + 1;
}

// co_await of a named handle to a move-only value gives a const reference into the future.
Future<const int*> peeksAtBox(Future<std::unique_ptr<int>> box) {
  const std::unique_ptr<int>& seen = co_await box;
  co_return seen.get();
}

} // namespace

TEST_CASE("co_return: a coroutine with nothing to wait for is finished when the call returns") {
  Future<int> f = returnsAtOnce(11);
  CHECK(f.finished());
  CHECK(f.read() == 11);
  int counter = 0;
  Future<void> v = voidAtOnce(&counter);
  CHECK(v.finished());
  CHECK(counter == 1);
  checkDispatcherEmpty();
}

TEST_CASE("co_await: the body runs synchronously up to the first await of an unfinished future") {
  Log log;
  Future<int> f = newFuture<int>();
  Future<int> r = logsAroundAwait(&log, f);
  CHECK(log == Log{"start"});
  CHECK_FALSE(r.finished());
  f.complete(4);
  CHECK(log == Log{"start"}); // the resumption is queued, not run inside complete()
  poll(0);
  CHECK(log == Log{"start", "after 4"});
  CHECK(r.read() == 5);
  checkDispatcherEmpty();
}

TEST_CASE("co_await: a finished future does not suspend the coroutine") {
  Log log;
  Future<int> f = newFuture<int>();
  f.complete(9);
  Future<int> r = logsAroundAwait(&log, f);
  CHECK(log == Log{"start", "after 9"});
  CHECK(r.finished());
  CHECK(r.read() == 10);
  CHECK(getGlobalDispatcher()->callbacks.empty()); // no hop through the queue either
  checkDispatcherEmpty();
}

TEST_CASE("co_await: an exception thrown before the first await fails the future, not the call") {
  Future<int> f = newFuture<int>();
  Future<int> r;
  CHECK_NOTHROW(r = throwsBeforeAwait(f));
  CHECK(r.failed());
  CHECK_THROWS_AS(r.read(), Boom);
  checkDispatcherEmpty();
}

TEST_CASE("co_await: an exception thrown after resuming fails the future with the same type") {
  Future<int> f = newFuture<int>();
  Future<int> r = throwsAfterAwait(f);
  f.complete(17);
  poll(0);
  REQUIRE(r.failed());
  bool caught = false;
  try {
    r.read();
  } catch (const Boom& e) {
    caught = true;
    CHECK(e.code == 17);
  }
  CHECK(caught);
  checkDispatcherEmpty();
}

TEST_CASE("co_await: a failure reaches the awaiting coroutine as the same exception type") {
  Future<int> f = newFuture<int>();
  Future<int> r = catchesBoom(throwsAfterAwait(f));
  f.complete(23);
  CHECK(waitWithin(r, 2000) == 23);
  checkDispatcherEmpty();
}

TEST_CASE("co_await: awaiting a failed future rethrows its exception into the coroutine") {
  Future<int> failed = newFuture<int>();
  failed.fail(Boom(5));
  Future<int> r = catchesBoom(failed);
  CHECK(r.finished()); // the failed future was finished: no suspension
  CHECK(r.read() == 5);
  checkDispatcherEmpty();
}

TEST_CASE("co_await: nested coroutines pass the value up and settle in one poll") {
  Future<int> f = newFuture<int>();
  Future<std::string> r = top(f);
  CHECK_FALSE(r.finished());
  f.complete(20);
  poll(0); // leaf, middle and top each resume from callbacks queued during this same pass
  REQUIRE(r.finished());
  CHECK(r.read() == "result 41");
  checkDispatcherEmpty();
}

TEST_CASE("co_await: several coroutines awaiting one future all resume (Nim t13889)") {
  Future<int> f = newFuture<int>();
  std::vector<Future<int>> waiters;
  for (int i = 0; i < 5; ++i)
    waiters.push_back(awaitsShared(f, i));
  f.complete(100);
  poll(0);
  for (int i = 0; i < 5; ++i) {
    REQUIRE(waiters[i].finished());
    CHECK(waiters[i].read() == 100 + i);
  }
  checkDispatcherEmpty();
}

TEST_CASE("co_await: a nil future fails the coroutine with ValueError") {
  Future<void> r = awaitsNil();
  REQUIRE(r.failed());
  CHECK_THROWS_AS(r.read(), ValueError);
  checkDispatcherEmpty();
}

TEST_CASE("co_await: a million awaits of a finished future use no stack") {
  constexpr int n = 1'000'000;
  bool finished = false;
  long long sum = -1;
  std::size_t queued = 0;
  auto body = [&] {
    Future<int> one = newFuture<int>();
    one.complete(1);
    Future<long long> r = sumFinished(one, n);
    finished = r.finished();
    if (finished) sum = r.read();
    queued = getGlobalDispatcher()->callbacks.size();
  };
  runOnSmallStack(body);
  CHECK(finished);
  CHECK(sum == n);
  CHECK(queued == 0);
  checkDispatcherEmpty();
}

TEST_CASE("co_return: a million calls of coroutines that return at once use no stack") {
  constexpr int n = 1'000'000;
  bool finished = false;
  long long sum = -1;
  auto body = [&] {
    Future<long long> r = sumImmediate(n);
    finished = r.finished();
    if (finished) sum = r.read();
  };
  runOnSmallStack(body);
  CHECK(finished);
  CHECK(sum == static_cast<long long>(n) * (n - 1) / 2);
  checkDispatcherEmpty();
}

TEST_CASE("co_await: a coroutine waiting on a future that is dropped unfinished is destroyed") {
  bool destroyed = false;
  Future<int> f = newFuture<int>();
  Future<int> r = waitsOnBorrowed(&f, &destroyed);
  CHECK_FALSE(destroyed);
  r = Future<int>();
  f = Future<int>(); // the last reference: its callbacks, the suspended frame among them, go
  CHECK(destroyed);
  checkDispatcherEmpty();
}

// Frame -> its future -> the future's callbacks -> the frame: a cycle no reference count breaks,
// so such a coroutine lives as long as its dispatcher, and is destroyed with it.
TEST_CASE("co_await: a coroutine holding a future nobody will complete is destroyed with its "
          "dispatcher") {
  PDispatcher previous = getGlobalDispatcher();
  setGlobalDispatcher(newDispatcher());
  bool destroyed = false;
  {
    Future<int> f = newFuture<int>();
    Future<int> r = waitsOnOwned(f, &destroyed);
  } // nobody outside the suspended frame can reach either future any more
  CHECK_FALSE(destroyed);
  CHECK(getGlobalDispatcher()->suspended.size() == 1);
  setGlobalDispatcher(previous); // drops the last reference to the other dispatcher
  CHECK(destroyed);
  checkDispatcherEmpty();
}

TEST_CASE("co_await: a thread's exit destroys the coroutines suspended on its dispatcher") {
  bool onTimer = false, onFuture = false, onQueue = false;
  std::thread([&] {
    Future<int> never = newFuture<int>();
    Future<int> ready = newFuture<int>();
    Future<int> a = waitsOnOwned(never, &onFuture);
    Future<int> b = waitsOnBorrowed(&ready, &onQueue);
    auto sleeper = [](bool* flag) -> Future<void> {
      Tracer t{flag};
      co_await sleepAsync(60000);
    };
    Future<void> c = sleeper(&onTimer);
    ready.complete(1); // b's continuation now waits in the callbacks queue
    CHECK(getGlobalDispatcher()->suspended.size() == 3);
  }).join();
  CHECK(onTimer);
  CHECK(onFuture);
  CHECK(onQueue);
  checkDispatcherEmpty();
}

TEST_CASE("co_await: the future's only owner takes the value without a copy; a named future "
          "keeps it for every reader (beyond Nim)") {
  int copies = 0;
  bool movedHandleNil = false;
  Future<int> own = awaitsOwnCounted(&copies, &movedHandleNil);
  CHECK(waitWithin(own) == 6);
  CHECK(movedHandleNil);
  CHECK(waitFor(countedLater(4, &copies)).value == 4);
  CHECK(countedAtOnce(5, &copies).read().value == 5);
  CHECK(copies == 0);

  Future<Counted> shared = newFuture<Counted>("shared");
  Future<int> first = awaitsNamedCounted(shared);
  Future<int> second = awaitsNamedCounted(shared);
  Future<int> third = awaitsCopiedHandle(shared);
  shared.complete(Counted(7, &copies));
  CHECK(waitWithin(first) == 7);
  CHECK(waitWithin(second) == 7);
  CHECK(waitWithin(third) == 7);
  CHECK(copies == 3); // each reader its own copy
  CHECK(shared.read().value == 7);
  CHECK(copies == 4);
  checkDispatcherEmpty();
}

TEST_CASE("co_await: a move-only value (std::unique_ptr) goes through coroutines, waitFor and "
          "read, and a shared reader sees it in place (beyond Nim)") {
  CHECK(waitFor(unboxes(41)) == 42);
  const std::unique_ptr<int> fromWaitFor = waitFor(boxLater(5));
  REQUIRE(fromWaitFor != nullptr);
  CHECK(*fromWaitFor == 5);

  Future<std::unique_ptr<int>> box = boxLater(6);
  settle(box);
  const std::unique_ptr<int>& inPlace = box.read();
  REQUIRE(inPlace != nullptr);
  CHECK(*inPlace == 6);
  CHECK(waitFor(peeksAtBox(box)) == inPlace.get());
  Future<std::unique_ptr<int>> other = box;
  CHECK_THROWS_WITH_AS(std::move(other).read(), doctest::Contains("cannot be moved out"),
                       ValueError);
  CHECK(other.isNil());
  CHECK(box.read().get() == inPlace.get()); // the refused move left the value where it was
  const int* const where = inPlace.get();
  const std::unique_ptr<int> taken = std::move(box).read();
  CHECK(taken.get() == where);
  CHECK(box.isNil());
  checkDispatcherEmpty();
}
