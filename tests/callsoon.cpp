// callSoon and the callback phase of poll: FIFO order, never inline, bounded per pass, and how
// future callbacks share the queue.
#include "support.hpp"

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using namespace asyncdispatch;
using namespace testsupport;

namespace {

using Log = std::vector<std::string>;

// A callback that queues itself again every time it runs, until told to stop, or after `limit`
// runs or 2 s, so a loop that drained the queue until empty ends (and fails) instead of hanging.
struct SpinState {
  bool stop = false;
  long runs = 0;
  long limit = 0; // 0: no limit
  Clock::time_point until = Clock::now() + std::chrono::seconds(2);
};

struct Spinner {
  std::shared_ptr<SpinState> state;
  void operator()() const {
    ++state->runs;
    if (state->stop || (state->limit != 0 && state->runs >= state->limit)) return;
    if (Clock::now() < state->until) callSoon(*this);
  }
};

// Stops the spinner however the test ends, so it cannot spin on into the next test.
struct StopSpinning {
  std::shared_ptr<SpinState> state;
  ~StopSpinning() { state->stop = true; }
};

} // namespace

TEST_CASE("callSoon: never runs the callback inline, only from the next poll") {
  bool ran = false;
  callSoon([&ran] { ran = true; });
  CHECK_FALSE(ran);
  CHECK(getGlobalDispatcher()->callbacks.size() == 1);
  poll(0);
  CHECK(ran);
  checkDispatcherEmpty();
}

TEST_CASE("callSoon: callbacks run first in, first out") {
  std::vector<int> order;
  for (int i = 0; i < 10; ++i)
    callSoon([&order, i] { order.push_back(i); });
  poll(0);
  CHECK(order == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  checkDispatcherEmpty();
}

TEST_CASE("callSoon: a callback queued while the queue runs still runs in the same poll") {
  Log log;
  callSoon([&log] {
    log.push_back("A");
    callSoon([&log] { log.push_back("C"); });
  });
  callSoon([&log] { log.push_back("B"); });
  poll(0);
  CHECK(log == Log{"A", "B", "C"}); // Nim: A, B, then the nested C, in one poll(0)
  checkDispatcherEmpty();
}

TEST_CASE("callSoon: an exception escapes poll and the remaining callbacks stay queued") {
  Log log;
  callSoon([&log] {
    log.push_back("A");
    throw std::runtime_error("from A");
  });
  callSoon([&log] { log.push_back("B"); });
  CHECK_THROWS_WITH_AS(poll(0), "from A", std::runtime_error);
  CHECK(log == Log{"A"});
  CHECK(getGlobalDispatcher()->callbacks.size() == 1);
  poll(0);
  CHECK(log == Log{"A", "B"});
  checkDispatcherEmpty();
}

TEST_CASE("callSoon: one poll runs a bounded number of callbacks (beyond Nim)") {
  auto state = std::make_shared<SpinState>();
  StopSpinning guard{state};
  state->limit = 1'000'000;
  callSoon(Spinner{state});
  poll(0);
  const long runsInOnePoll = state->runs;
  CHECK(runsInOnePoll > 1);            // re-queued callbacks still run in the same pass...
  CHECK(runsInOnePoll < state->limit); // ...but not until the queue is empty
  CHECK(getGlobalDispatcher()->callbacks.size() == 1);
  state->stop = true;
  while (!getGlobalDispatcher()->callbacks.empty())
    poll(0);
  CHECK(state->runs == runsInOnePoll + 1);
  checkDispatcherEmpty();
}

TEST_CASE("callSoon: a callback that re-queues itself forever does not starve timers") {
  auto state = std::make_shared<SpinState>();
  StopSpinning guard{state};
  callSoon(Spinner{state});
  const Clock::time_point start = Clock::now();
  Future<void> timer = sleepAsync(20);
  waitWithin(timer, 2000);
  const double elapsed = msSince(start);
  CHECK(elapsed >= 20);
  CHECK(elapsed < 1000);
  state->stop = true;
  while (!getGlobalDispatcher()->callbacks.empty())
    poll(0);
  checkDispatcherEmpty();
}

TEST_CASE("callSoon: a callback that re-queues itself forever does not starve I/O") {
  auto [client, server] = connectedPair();
  auto state = std::make_shared<SpinState>();
  StopSpinning guard{state};
  callSoon(Spinner{state});
  Future<std::string> got = recv(server, 16);
  Future<void> sent = send(client, std::string("ping"));
  CHECK(waitWithin(got, 2000) == "ping");
  waitWithin(sent, 2000);
  CHECK(state->runs > 1);
  state->stop = true;
  while (!getGlobalDispatcher()->callbacks.empty())
    poll(0);
  closeSocket(client);
  closeSocket(server);
  checkDispatcherEmpty();
}

TEST_CASE("complete: future callbacks never run inside complete(), only from poll") {
  Future<int> f = newFuture<int>();
  bool ran = false;
  f.addCallback([&ran] { ran = true; });
  f.complete(1);
  CHECK_FALSE(ran);
  CHECK(getGlobalDispatcher()->callbacks.size() == 1);
  poll(0);
  CHECK(ran);
  checkDispatcherEmpty();
}

TEST_CASE("fail: future callbacks never run inside fail(), only from poll") {
  Future<int> f = newFuture<int>();
  bool ran = false;
  f.addCallback([&ran] { ran = true; });
  f.fail(IOError("x"));
  CHECK_FALSE(ran);
  CHECK(getGlobalDispatcher()->callbacks.size() == 1);
  poll(0);
  CHECK(ran);
  checkDispatcherEmpty();
}

TEST_CASE("complete: each callback is queued as its own entry, in registration order") {
  Future<void> f = newFuture<void>();
  Log log;
  f.addCallback([&log] { log.push_back("cb1"); });
  f.addCallback([&log] { log.push_back("cb2"); });
  f.addCallback([&log] { log.push_back("cb3"); });
  f.complete();
  CHECK(getGlobalDispatcher()->callbacks.size() == 3);
  poll(0);
  CHECK(log == Log{"cb1", "cb2", "cb3"});
  checkDispatcherEmpty();
}

TEST_CASE("addCallback: a callback added to a finished future is queued, not run inline") {
  Future<int> f = newFuture<int>();
  f.complete(1);
  bool ran = false;
  f.addCallback([&ran] { ran = true; });
  CHECK_FALSE(ran);
  CHECK(getGlobalDispatcher()->callbacks.size() == 1);
  poll(0);
  CHECK(ran);
  checkDispatcherEmpty();
}

TEST_CASE("complete: future callbacks share the callSoon queue, in the order they were queued") {
  Log log;
  Future<void> f = newFuture<void>();
  f.addCallback([&log] { log.push_back("future"); });
  callSoon([&log] { log.push_back("before"); });
  f.complete();
  callSoon([&log] { log.push_back("after"); });
  poll(0);
  CHECK(log == Log{"before", "future", "after"});
  checkDispatcherEmpty();
}
