// Running the loop: poll, runForever, waitFor, drain, hasPendingOperations, the per-thread global
// dispatcher and the error types.
#include "support.hpp"

#if defined(_WIN32)
#include <malloc.h>
#endif

#include <cerrno>
#include <chrono>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

using namespace asyncdispatch;
using namespace testsupport;

namespace {

constexpr const char* kNothingToDo = "No handles or timers registered in dispatcher.";

// Fires every 10 ms for as long as it is left pending.
struct Heartbeat {
  int* beats;
  void operator()() const {
    ++*beats;
    sleepAsync(10).addCallback(*this);
  }
};

#if defined(_WIN32)
// The bytes in use in the C runtime's heap, where operator new takes its memory.
long long heapInUse() {
  _HEAPINFO entry{};
  long long used = 0;
  int status = _HEAPOK;
  while ((status = _heapwalk(&entry)) == _HEAPOK) {
    if (entry._useflag == _USEDENTRY) used += static_cast<long long>(entry._size);
  }
  REQUIRE(status == _HEAPEND);
  return used;
}

// How many handles this process holds (sockets included).
int openHandles() {
  DWORD count = 0;
  REQUIRE(GetProcessHandleCount(GetCurrentProcess(), &count));
  return static_cast<int>(count);
}
#endif

} // namespace

TEST_CASE("poll: throws ValueError when nothing is registered, armed, due or queued") {
  CHECK_THROWS_WITH_AS(poll(), kNothingToDo, ValueError);
  checkDispatcherEmpty();
}

TEST_CASE("poll: poll(0) with nothing to do throws the same ValueError") {
  CHECK_THROWS_WITH_AS(poll(0), kNothingToDo, ValueError);
  checkDispatcherEmpty();
}

TEST_CASE("poll: a registered socket with no operation waiting does not count") {
  const AsyncFD fd = createAsyncNativeSocket();
  CHECK(contains(getGlobalDispatcher(), fd));
  const Clock::time_point start = Clock::now();
  CHECK_THROWS_WITH_AS(poll(1000), kNothingToDo, ValueError);
  CHECK(msSince(start) < 500); // thrown at once, not after waiting
  closeSocket(fd);
  checkDispatcherEmpty();
}

TEST_CASE("poll: a queued callback alone is something to do") {
  bool ran = false;
  callSoon([&ran] { ran = true; });
  CHECK_NOTHROW(poll(0));
  CHECK(ran);
  checkDispatcherEmpty();
}

TEST_CASE("runForever: runs timers and callbacks, then ends with the ValueError") {
  bool timerRan = false;
  bool callbackRan = false;
  sleepAsync(10).addCallback([&timerRan] { timerRan = true; });
  callSoon([&callbackRan] { callbackRan = true; });
  CHECK_THROWS_WITH_AS(runForever(), kNothingToDo, ValueError);
  CHECK(timerRan);
  CHECK(callbackRan);
  checkDispatcherEmpty();
}

TEST_CASE("waitFor: a finished future is returned without polling") {
  Future<int> f = newFuture<int>();
  f.complete(3);
  bool ran = false;
  callSoon([&ran] { ran = true; });
  CHECK(waitFor(f) == 3);
  CHECK_FALSE(ran); // no poll happened
  CHECK(getGlobalDispatcher()->callbacks.size() == 1);
  poll(0);
  checkDispatcherEmpty();
}

TEST_CASE("waitFor: a failed future rethrows its exception") {
  Future<void> f = newFuture<void>();
  f.fail(IOError("nope"));
  CHECK_THROWS_WITH_AS(waitFor(f), "nope", IOError);
  checkDispatcherEmpty();
}

TEST_CASE("waitFor: polls until the future finishes") {
  Future<int> f = newFuture<int>();
  sleepAsync(10).addCallback([f] { f.complete(8); });
  CHECK(waitFor(f) == 8);
  checkDispatcherEmpty();
}

TEST_CASE("waitFor: a future that can never finish throws the ValueError") {
  Future<int> f = newFuture<int>();
  bool ran = false;
  callSoon([&ran] { ran = true; });
  CHECK_THROWS_WITH_AS(waitFor(f), kNothingToDo, ValueError);
  CHECK(ran); // what could run did run first
  checkDispatcherEmpty();
}

TEST_CASE("drain: returns at once and does not throw when nothing is pending") {
  const Clock::time_point start = Clock::now();
  CHECK_NOTHROW(drain(5000));
  CHECK_NOTHROW(drain());
  CHECK(msSince(start) < 500);
  checkDispatcherEmpty();
}

TEST_CASE("drain: returns early once nothing is pending any more") {
  const Clock::time_point start = Clock::now(); // before the timer: its 30 ms count from there
  Future<void> timer = sleepAsync(30);
  drain(5000);
  const double elapsed = msSince(start);
  CHECK(timer.finished());
  CHECK(elapsed >= 30);
  CHECK(elapsed < 1000);
  checkDispatcherEmpty();
}

TEST_CASE("drain: stops once its budget has passed on the monotonic clock") {
  Future<void> timer = sleepAsync(5000);
  const Clock::time_point start = Clock::now();
  drain(100);
  const double elapsed = msSince(start);
  CHECK_FALSE(timer.finished());
  CHECK(elapsed >= 100);
  CHECK(elapsed < 1000);
  timer.cancel(); // no longer pending; its dead entry stays in the heap until its deadline
  CHECK_FALSE(hasPendingOperations());
  getGlobalDispatcher()->timers.clear();
  getGlobalDispatcher()->cancelledTimers = 0;
  checkDispatcherEmpty();
}

TEST_CASE("drain: spends its whole budget over several passes (Nim's budget decays early)") {
  // A periodic 10 ms heartbeat keeps something pending; Nim's drain(300) would stop after about
  // 80 ms because it subtracts the cumulative elapsed time on every pass.
  int beats = 0;
  sleepAsync(10).addCallback(Heartbeat{&beats});
  const Clock::time_point start = Clock::now();
  drain(300);
  const double elapsed = msSince(start);
  CHECK(elapsed >= 300);
  CHECK(elapsed < 1500);
  CHECK(beats >= 5);
  getGlobalDispatcher()->timers.clear(); // the next heartbeat is still pending
  checkDispatcherEmpty();
}

TEST_CASE("hasPendingOperations: false when nothing is armed, due or queued") {
  getGlobalDispatcher(); // made on first use: a fresh dispatcher has nothing pending
  CHECK_FALSE(hasPendingOperations());
  checkDispatcherEmpty();
}

TEST_CASE("hasPendingOperations: a queued callback counts") {
  callSoon([] {});
  CHECK(hasPendingOperations());
  poll(0);
  CHECK_FALSE(hasPendingOperations());
  checkDispatcherEmpty();
}

TEST_CASE("hasPendingOperations: an idle registered socket does not count, a pending recv does") {
  auto [client, server] = connectedPair();
  CHECK_FALSE(hasPendingOperations());
  CHECK(activeDescriptors() == 0);
  Future<std::string> got = recv(server, 8);
  CHECK(hasPendingOperations());
  CHECK(activeDescriptors() == 1);
  waitWithin(send(client, std::string("x")), 2000);
  CHECK(waitWithin(got, 2000) == "x");
  CHECK_FALSE(hasPendingOperations());
  closeSocket(client);
  closeSocket(server);
  checkDispatcherEmpty();
}

TEST_CASE("newDispatcher: makes an empty dispatcher without installing it") {
  PDispatcher current = getGlobalDispatcher();
  PDispatcher fresh = newDispatcher();
  REQUIRE(fresh != nullptr);
  CHECK(fresh != current);
  CHECK(getGlobalDispatcher() == current);
  CHECK(fresh->timers.empty());
  CHECK(fresh->callbacks.empty());
  CHECK(registeredDescriptors(fresh) == 0);
  checkDispatcherEmpty();
}

TEST_CASE("getGlobalDispatcher: the same dispatcher on every call in one thread") {
  CHECK(getGlobalDispatcher() == getGlobalDispatcher());
  checkDispatcherEmpty();
}

TEST_CASE("setGlobalDispatcher: callSoon, sleepAsync and poll then use the new dispatcher") {
  PDispatcher original = getGlobalDispatcher();
  PDispatcher other = newDispatcher();
  setGlobalDispatcher(other);
  CHECK(getGlobalDispatcher() == other);
  bool ran = false;
  callSoon([&ran] { ran = true; });
  Future<void> timer = sleepAsync(0);
  CHECK(other->callbacks.size() == 1);
  CHECK(other->timers.size() == 1);
  CHECK(original->callbacks.empty());
  CHECK(original->timers.empty());
  poll(0);
  CHECK(ran);
  CHECK(timer.finished());
  CHECK(other->callbacks.empty());
  CHECK(other->timers.empty());
  setGlobalDispatcher(original);
  CHECK(getGlobalDispatcher() == original);
  checkDispatcherEmpty();
}

TEST_CASE("setGlobalDispatcher: throws ValueError while the current one has queued callbacks") {
  PDispatcher original = getGlobalDispatcher();
  bool ran = false;
  callSoon([&ran] { ran = true; });
  CHECK_THROWS_AS(setGlobalDispatcher(newDispatcher()), ValueError);
  CHECK(getGlobalDispatcher() == original);
  CHECK(original->callbacks.size() == 1); // nothing was lost
  poll(0);
  CHECK(ran);
  checkDispatcherEmpty();
}

TEST_CASE("getGlobalDispatcher: each thread has its own dispatcher") {
  PDispatcher mine = getGlobalDispatcher();
  Dispatcher* theirs = nullptr;
  bool sameTwice = false;
  bool ranThere = false;
  std::thread other([&] {
    theirs = getGlobalDispatcher().get();
    sameTwice = getGlobalDispatcher().get() == theirs;
    callSoon([&ranThere] { ranThere = true; });
    poll(0);
  });
  other.join();
  CHECK(theirs != nullptr);
  CHECK(theirs != mine.get());
  CHECK(sameTwice);
  CHECK(ranThere);
  CHECK(mine->callbacks.empty()); // the other thread's callSoon went to its own dispatcher
  checkDispatcherEmpty();
}

#if defined(_WIN32)
[[maybe_unused]] const bool selectorCaseOut = testsupport::compiledOut(
    "tests/loop.cpp: \"getIoHandler: returns the dispatcher's selector\"",
    "the IOCP dispatcher has no selector: a Windows case checks its completion port instead");
TEST_CASE("getGlobalDispatcher: a thread's recycled blocks go back to the heap when it exits "
          "(Windows: MinGW frees a thread's thread_locals before their destructors run)") {
  // Each thread fills its free lists (64 blocks in each of 16 sizes, about half a megabyte), then
  // exits: the lists must be emptied, not lost with the thread's emulated TLS.
  const auto fillLists = [] {
    std::vector<void*> blocks;
    for (std::size_t size = 64; size <= 1024; size += 64) {
      for (int i = 0; i < 64; ++i)
        blocks.push_back(detail::allocateBlock(size));
    }
    std::size_t next = 0;
    for (std::size_t size = 64; size <= 1024; size += 64) {
      for (int i = 0; i < 64; ++i)
        detail::freeBlock(blocks[next++], size);
    }
    callSoon([] {}); // and a dispatcher, destroyed at the same exit
    poll(0);
  };
  std::thread(fillLists).join(); // the first thread makes what a thread makes only once
  const long long before = heapInUse();
  for (int i = 0; i < 20; ++i)
    std::thread(fillLists).join();
  const long long grown = heapInUse() - before;
  CHECK_MESSAGE(grown < 256 * 1024, "the heap grew by " << grown << " bytes over 20 threads");
  checkDispatcherEmpty();
}

TEST_CASE("newDispatcher: a dispatcher destroyed with overlapped calls in flight cancels them and "
          "frees what they held (Windows)") {
  const PDispatcher global = getGlobalDispatcher();
  const int handlesBefore = openHandles();
  const long long heapBefore = heapInUse();
  std::vector<SOCKET> sockets;
  Future<std::string> received;
  Future<AcceptResult> accepted;
  Future<void> sent;
  {
    PDispatcher other = newDispatcher();
    setGlobalDispatcher(other);
    auto [client, server] = connectedPair();
    const Listener l = listenLocal();
    received = recv(client, 100); // the peer sends nothing
    accepted = acceptAddr(l.fd);  // with the socket it made for AcceptEx
    setSockOptInt(client, SOL_SOCKET, SO_SNDBUF, 4096);
    sent = send(client, std::string(8 << 20, 'x')); // a peer that does not read: 8 MiB held
    for (int i = 0; i < 5; ++i)
      poll(10);
    REQUIRE_FALSE(sent.finished());
    CHECK(other->pendingOperations == 3);
    sockets = {static_cast<SOCKET>(client), static_cast<SOCKET>(server), static_cast<SOCKET>(l.fd)};
    setGlobalDispatcher(global);
    const Clock::time_point start = Clock::now();
    other.reset(); // the last reference: destroyed here
    CHECK(msSince(start) < 1000);
  }
  // Their dispatcher is gone: the futures stay pending, and nothing runs for them.
  CHECK_FALSE(received.finished());
  CHECK_FALSE(accepted.finished());
  CHECK_FALSE(sent.finished());
  received = {};
  accepted = {};
  sent = {};
  for (SOCKET s : sockets)
    ::closesocket(s);
  CHECK(openHandles() == handlesBefore); // the socket AcceptEx held was closed too
  const long long grown = heapInUse() - heapBefore;
  CHECK_MESSAGE(grown < 1024 * 1024, "the heap grew by " << grown << " bytes");
  checkDispatcherEmpty();
}

TEST_CASE("getIoHandler: returns the dispatcher's completion port (Windows)") {
  PDispatcher p = getGlobalDispatcher();
  CHECK(getIoHandler(p) == p->ioPort);
  PDispatcher fresh = newDispatcher();
  CHECK(getIoHandler(fresh) == fresh->ioPort);
  CHECK(getIoHandler(fresh) != getIoHandler(p));
  checkDispatcherEmpty();
}
#else
[[maybe_unused]] const bool windowsLoopCasesOut = testsupport::compiledOut(
    "tests/loop.cpp: the 3 Windows cases (a thread's recycled blocks under MinGW, a dispatcher "
    "destroyed with overlapped calls in flight, getIoHandler's completion port)",
    "they test the IOCP dispatcher and MinGW's thread_locals");
TEST_CASE("getIoHandler: returns the dispatcher's selector") {
  PDispatcher p = getGlobalDispatcher();
  CHECK(&getIoHandler(p) == &p->selector);
  PDispatcher fresh = newDispatcher();
  CHECK(&getIoHandler(fresh) == &fresh->selector);
  checkDispatcherEmpty();
}
#endif

TEST_CASE("OSError: is a std::system_error carrying the error code") {
  const OSError made(ECONNREFUSED, "connect(fd 5)");
  const std::system_error& asStd = made;
  CHECK(asStd.code().value() == ECONNREFUSED);
  CHECK(asStd.code().category() == std::system_category());
  CHECK(std::string(asStd.what()) ==
        "connect(fd 5): " + std::system_category().message(ECONNREFUSED));

  // And one the library raised: a recv failed by closeSocket.
  auto [client, server] = connectedPair();
  Future<std::string> got = recv(server, 8);
  closeSocket(server);
  REQUIRE(got.failed());
  bool caught = false;
  try {
    got.read();
  } catch (const std::system_error& e) {
    caught = true;
#if defined(_WIN32) // an aborted overlapped call (DESIGN §5)
    CHECK(e.code().value() == ERROR_OPERATION_ABORTED);
#else
    CHECK(e.code().value() == EBADF);
#endif
  }
  CHECK(caught);
  closeSocket(client);
  checkDispatcherEmpty();
}

TEST_CASE("ValueError: is a std::invalid_argument") {
  CHECK_THROWS_AS(poll(0), std::invalid_argument);
  checkDispatcherEmpty();
}

TEST_CASE("FutureError: is a std::logic_error") {
  Future<int> f = newFuture<int>();
  f.complete(1);
  CHECK_THROWS_AS(f.complete(2), std::logic_error);
  checkDispatcherEmpty();
}

TEST_CASE("IOError: is a std::runtime_error") {
  Future<int> f = newFuture<int>();
  f.fail(IOError("disk on fire"));
  CHECK_THROWS_WITH_AS(f.read(), "disk on fire", std::runtime_error);
  checkDispatcherEmpty();
}
