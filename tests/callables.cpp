// Any callable where a callback goes, as std::function and Nim's procs take them: a function's
// name, a function pointer, a lambda, a move-only object and a std::function, at callSoon,
// addCallback, callback=, addRead, addWrite, addTimer and addEvent (addSignal and addProcess are
// in their own files), and a null function pointer refused at the call.
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

namespace {

// Plain functions can only reach the test through globals; each case resets what it reads.
std::vector<std::string> ran;

void tick() {
  ran.push_back("tick");
}

void tock() {
  ran.push_back("tock");
}

void sawValue(Future<int> f) {
  ran.push_back("value " + std::to_string(f.read()));
}

int fdCalls = 0;

bool countAndStop(AsyncFD) {
  ++fdCalls;
  return true;
}

// A callable that can only be moved: it owns its state.
struct MoveOnly {
  std::unique_ptr<std::string> name = std::make_unique<std::string>("move-only");
  void operator()() const { ran.push_back(*name); }
};

} // namespace

TEST_CASE("callSoon: takes a function's name, a function pointer, a lambda, a move-only object "
          "and a std::function, and runs them in order") {
  ran.clear();
  void (*pointer)() = tock;
  const std::function<void()> wrapped = [] { ran.push_back("std::function"); };
  callSoon(tick);
  callSoon(pointer);
  callSoon(&tick);
  callSoon([] { ran.push_back("lambda"); });
  callSoon(MoveOnly{});
  callSoon(wrapped);
  CHECK(ran.empty()); // never inline
  poll(0);
  CHECK(ran ==
        std::vector<std::string>{"tick", "tock", "tick", "lambda", "move-only", "std::function"});
  checkDispatcherEmpty();
}

TEST_CASE("callSoon: a null function pointer throws ValueError at the call and queues nothing") {
  void (*none)() = nullptr;
  CHECK(valueErrorOf([&] { callSoon(none); }) == "callSoon: the callback is empty");
  CHECK_FALSE(hasPendingOperations());
  checkDispatcherEmpty();
}

TEST_CASE("addCallback: takes a function's name, void() or void(Future<T>)") {
  ran.clear();
  Future<int> fut = newFuture<int>("callables");
  fut.addCallback(tick);
  fut.addCallback(sawValue);
  fut.addCallback(&tock);
  fut.complete(7);
  waitWithin(fut);
  runDry();
  CHECK(ran == std::vector<std::string>{"tick", "value 7", "tock"});
  checkDispatcherEmpty();
}

TEST_CASE("callback=: takes a function's name and replaces the callbacks the future had") {
  ran.clear();
  Future<int> fut = newFuture<int>("callables");
  fut.addCallback([] { ran.push_back("dropped"); });
  fut.callback(sawValue);
  fut.complete(3);
  runDry();
  CHECK(ran == std::vector<std::string>{"value 3"});
  checkDispatcherEmpty();
}

TEST_CASE("addCallback and callback=: a null function pointer throws ValueError and keeps the "
          "callbacks the future had") {
  ran.clear();
  Future<int> fut = newFuture<int>("callables");
  fut.addCallback(tick);
  void (*none)() = nullptr;
  void (*noneWithFuture)(Future<int>) = nullptr;
  CHECK(valueErrorOf([&] { fut.addCallback(none); }) == "addCallback: the callback is empty");
  CHECK(valueErrorOf([&] { fut.callback(noneWithFuture); }) ==
        "addCallback: the callback is empty");
  fut.complete(1);
  runDry();
  CHECK(ran == std::vector<std::string>{"tick"});
  checkDispatcherEmpty();
}

TEST_CASE("addRead and addWrite: take a function's name as the Callback") {
  auto [client, server] = connectedPair();
  fdCalls = 0;
  addWrite(client, countAndStop); // a fresh connection has room: writable at once
  pollUntil([] { return fdCalls == 1; });
  CHECK(fdCalls == 1);
  waitWithin(send(client, std::string("x")));
  addRead(server, countAndStop);
  pollUntil([] { return fdCalls == 2; });
  CHECK(fdCalls == 2);
  closeSocket(client);
  closeSocket(server);
  checkDispatcherEmpty();
}

TEST_CASE("addTimer and addEvent: take a function's name and a std::function as the Callback") {
  fdCalls = 0;
  addTimer(1, true, countAndStop);
  pollUntil([] { return fdCalls == 1; });
  CHECK(fdCalls == 1);

  AsyncEvent ev = newAsyncEvent();
  addEvent(ev, std::function<bool(AsyncFD)>(countAndStop));
  trigger(ev);
  pollUntil([] { return fdCalls == 2; });
  CHECK(fdCalls == 2);
  close(ev);
  checkDispatcherEmpty();
}

TEST_CASE("addRead, addWrite, addTimer, addEvent, addProcess: a null function pointer throws "
          "ValueError naming the call, and arms nothing") {
  bool (*none)(AsyncFD) = nullptr;
  const std::pair<AsyncFD, AsyncFD> pair = connectedPair();
  const AsyncFD client = pair.first; // a name a lambda can capture, unlike a structured binding
  const AsyncFD server = pair.second;
  CHECK(valueErrorOf([&] { addRead(client, none); }) == "addRead: the callback is empty");
  CHECK(valueErrorOf([&] { addWrite(client, none); }) == "addWrite: the callback is empty");
  CHECK(valueErrorOf([&] { addTimer(1, true, none); }) == "addTimer: the callback is empty");
  AsyncEvent ev = newAsyncEvent();
  CHECK(valueErrorOf([&] { addEvent(ev, none); }) == "addEvent: the callback is empty");
  CHECK(valueErrorOf([&] { addProcess(1, none); }) == "addProcess: the callback is empty");
  CHECK(activeDescriptors() == 0);
  CHECK_FALSE(hasPendingOperations());
  close(ev);
  closeSocket(client);
  closeSocket(server);
  checkDispatcherEmpty();
}
