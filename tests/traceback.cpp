// Async tracebacks (Nim's "Async traceback" lines): an error leaving coroutines collects their
// frames, innermost first, in what() and traceback(), one "  file(line) name" each, and keeps its
// type; foreign exception types pass through unchanged. A coroutine is named after its function
// (__builtin_FUNCTION: the bare name, e.g. "innerStep" for a function at namespace scope,
// "operator()" for a lambda, "f<int>" for a template), so the coroutines here are plain
// functions. Each path through the coroutines keeps its own chain, however many share a failed
// future.
#if !defined(_WIN32)
#include <sys/socket.h>
#endif

#include <algorithm>
#include <cerrno>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

namespace {

// An application's own error type, which gets the traceback by deriving from Traced.
class AppError : public Traced<std::runtime_error> {
public:
  explicit AppError(const std::string& message, int detail) : Traced(message), detail_(detail) {}
  int detail() const { return detail_; }

private:
  int detail_;
};

// The code of an OSError from a recv whose peer reset the connection, checked: ECONNRESET; on
// Windows the completion's ERROR_NETNAME_DELETED (WSAECONNRESET from a call that fails at once).
int resetCode(const OSError& e) {
#if defined(_WIN32)
  const int code = e.code().value();
  CHECK((code == ERROR_NETNAME_DELETED || code == WSAECONNRESET));
  return code;
#else
  CHECK(e.code().value() == ECONNRESET);
  return ECONNRESET;
#endif
}

enum class Kind { Value, OS, IO, App, Foreign };

[[noreturn]] void throwKind(Kind kind) {
  switch (kind) {
  case Kind::Value:
    throw ValueError("bad value");
  case Kind::OS:
    throw OSError(EPIPE, "send(fd 42)");
  case Kind::IO:
    throw IOError("io trouble");
  case Kind::App:
    throw AppError("application trouble", 7);
  case Kind::Foreign:
    throw std::runtime_error("foreign trouble");
  }
  throw std::logic_error("unreachable");
}

// Three coroutines, each awaiting the next after a real suspension of the innermost. The
// constants bound the lines of each function: its frame's line is one of them (GCC names the
// closing brace, clang the function's name).
constexpr int kInnerFirst = __LINE__;
Future<int> innerStep(Kind kind) {
  co_await sleepAsync(1);
  throwKind(kind);
  co_return 0;
}
constexpr int kInnerLast = __LINE__;

Future<int> middleStep(Kind kind) {
  const int v = co_await innerStep(kind);
  co_return v + 1;
}
constexpr int kMiddleLast = __LINE__;

Future<int> outerStep(Kind kind) {
  const int v = co_await middleStep(kind);
  co_return v + 1;
}
constexpr int kOuterLast = __LINE__;

// One frame of a traceback() line, "  file(line) name", taken apart.
struct Frame {
  std::string file;
  int line;
  std::string name;
};

std::vector<Frame> framesOf(const std::string& traceback) {
  std::vector<Frame> frames;
  std::size_t start = 0;
  while (start < traceback.size()) {
    const std::size_t end = traceback.find('\n', start);
    const std::string text = traceback.substr(start, end - start);
    const std::size_t open = text.rfind('('), close = text.rfind(") ");
    REQUIRE(text.rfind("  ", 0) == 0);
    REQUIRE(open != std::string::npos);
    REQUIRE(close != std::string::npos);
    frames.push_back({text.substr(2, open - 2), std::stoi(text.substr(open + 1, close - open - 1)),
                      text.substr(close + 2)});
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return frames;
}

// what() or traceback() with each frame's "file(line) " left out, so that a case states the
// chain by the coroutines' names; the locations have a case of their own.
std::string names(const std::string& text) {
  std::string out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = text.find('\n', start);
    std::string line = text.substr(start, end - start);
    const std::size_t close = line.rfind(") ");
    if (line.rfind("  ", 0) == 0 && close != std::string::npos)
      line = "  " + line.substr(close + 2);
    out += line;
    if (end == std::string::npos) return out;
    out += '\n';
    start = end + 1;
  }
}

const char* const kHeading = "\nAsync traceback (innermost first):";
const std::string kThreeFrames = std::string(kHeading) + "\n  innerStep\n  middleStep\n  outerStep";

// A coroutine that catches the inner error and throws a new one: its traceback starts here.
Future<int> middleWrapping() {
  try {
    co_return co_await innerStep(Kind::Value);
  } catch (const ValueError&) {
    throw IOError("wrapped");
  }
}

Future<int> outerOfWrapping() {
  co_return co_await middleWrapping();
}

// A coroutine that catches the inner error and rethrows the same one (`throw;`): the traceback
// goes on.
Future<int> middleRethrowing() {
  try {
    co_return co_await innerStep(Kind::Value);
  } catch (const ValueError&) {
    throw;
  }
}

Future<int> outerOfRethrowing() {
  co_return co_await middleRethrowing();
}

// The library's own OSError, from a recv on a socket whose peer reset the connection.
Future<std::string> receiveStrict(AsyncFD fd) {
  std::string got = co_await recv(fd, 100, {}); // no SafeDisconn: the reset is an error
  co_return got;
}

Future<std::string> middleReceive(AsyncFD fd) {
  std::string got = co_await receiveStrict(fd);
  co_return got;
}

Future<std::string> outerReceive(AsyncFD fd) {
  std::string got = co_await middleReceive(fd);
  co_return got;
}

// Two paths out of one failed future, and a coroutine that only passes the error on.
Future<int> leftBranch(Future<int> shared) {
  co_return co_await shared;
}

Future<int> rightBranch(Future<int> shared) {
  co_return co_await shared;
}

Future<int> awaitOnce(Future<int> shared) {
  co_return co_await shared;
}

// A stage of a long pipeline: passes on what the stage before it gives.
Future<int> passOn(Future<int> before) {
  co_return co_await before;
}

// The what() of the error a future failed with, read through readError as a stored error is.
std::string storedWhat(const FutureBase& fut) {
  try {
    std::rethrow_exception(fut.readError());
  } catch (const std::exception& e) {
    return e.what();
  }
}

Future<void> fireAndForget() {
  co_await outerStep(Kind::Value);
}

} // namespace

TEST_CASE("traceback: an error thrown three coroutines deep names them innermost first after "
          "its message") {
  Future<int> fut = outerStep(Kind::Value);
  settle(fut, 2000);
  REQUIRE(fut.failed());
  try {
    fut.read();
    FAIL("read() did not throw");
  } catch (const ValueError& e) {
    CHECK(names(e.what()) == "bad value" + kThreeFrames);
    CHECK(names(e.traceback()) == "  innerStep\n  middleStep\n  outerStep\n");
  }
  checkDispatcherEmpty();
}

TEST_CASE("traceback: the error keeps its type (OSError with its code, ValueError, IOError, and "
          "their std bases)") {
  {
    Future<int> fut = outerStep(Kind::OS);
    settle(fut, 2000);
    CHECK_THROWS_AS(fut.read(), OSError);
    CHECK_THROWS_AS(fut.read(), std::system_error);
    try {
      fut.read();
    } catch (const OSError& e) {
      CHECK(e.code().value() == EPIPE);
      CHECK(e.code().category() == std::system_category());
      CHECK(names(e.what()) ==
            "send(fd 42): " + std::system_category().message(EPIPE) + kThreeFrames);
    }
  }
  {
    Future<int> fut = outerStep(Kind::Value);
    settle(fut, 2000);
    CHECK_THROWS_AS(fut.read(), ValueError);
    CHECK_THROWS_AS(fut.read(), std::invalid_argument);
  }
  {
    Future<int> fut = outerStep(Kind::IO);
    settle(fut, 2000);
    CHECK_THROWS_AS(fut.read(), IOError);
    CHECK_THROWS_AS(fut.read(), std::runtime_error);
    try {
      fut.read();
    } catch (const IOError& e) {
      CHECK(names(e.what()) == "io trouble" + kThreeFrames);
    }
  }
  checkDispatcherEmpty();
}

TEST_CASE("traceback: an application type deriving from Traced<std::runtime_error> gets the "
          "traceback too") {
  Future<int> fut = outerStep(Kind::App);
  settle(fut, 2000);
  try {
    fut.read();
    FAIL("read() did not throw");
  } catch (const AppError& e) {
    CHECK(e.detail() == 7);
    CHECK(names(e.what()) == "application trouble" + kThreeFrames);
    CHECK(names(e.traceback()) == "  innerStep\n  middleStep\n  outerStep\n");
  }
  CHECK_THROWS_AS(fut.read(), std::runtime_error);
  checkDispatcherEmpty();
}

TEST_CASE("traceback: a foreign exception (std::runtime_error) passes through unchanged") {
  Future<int> fut = outerStep(Kind::Foreign);
  settle(fut, 2000);
  try {
    fut.read();
    FAIL("read() did not throw");
  } catch (const AsyncTraceback&) {
    FAIL("a std::runtime_error became a traced error");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) == "foreign trouble");
  }
  checkDispatcherEmpty();
}

TEST_CASE("traceback: the library's own OSError from a recv carries the coroutines it left") {
  auto [client, server] = connectedPair();
  Future<std::string> fut = outerReceive(server);
  poll(0);
  REQUIRE_FALSE(fut.finished());
  const linger reset{1, 0};
#if defined(_WIN32)
  REQUIRE(::setsockopt(static_cast<SOCKET>(client), SOL_SOCKET, SO_LINGER,
                       reinterpret_cast<const char*>(&reset), sizeof reset) == 0);
#else
  REQUIRE(::setsockopt(static_cast<int>(client), SOL_SOCKET, SO_LINGER, &reset, sizeof reset) == 0);
#endif
  closeSocket(client);
  settle(fut, 2000);
  try {
    fut.read();
    FAIL("read() did not throw");
  } catch (const OSError& e) {
    const int code = resetCode(e);
    CHECK(names(e.what()) == "recv(" + fdText(server) +
                                 "): " + std::system_category().message(code) + kHeading +
                                 "\n  receiveStrict\n  middleReceive\n  outerReceive");
  }
  closeSocket(server);
  checkDispatcherEmpty();
}

TEST_CASE("traceback: a coroutine that catches the error and throws a new one starts a new "
          "traceback") {
  Future<int> fut = outerOfWrapping();
  settle(fut, 2000);
  try {
    fut.read();
    FAIL("read() did not throw");
  } catch (const IOError& e) {
    CHECK(names(e.what()) ==
          "wrapped" + std::string(kHeading) + "\n  middleWrapping\n  outerOfWrapping");
    CHECK(names(e.traceback()) == "  middleWrapping\n  outerOfWrapping\n");
  }
  checkDispatcherEmpty();
}

TEST_CASE("traceback: a coroutine that rethrows the same error (throw;) continues its traceback") {
  Future<int> fut = outerOfRethrowing();
  settle(fut, 2000);
  try {
    fut.read();
    FAIL("read() did not throw");
  } catch (const ValueError& e) {
    CHECK(names(e.what()) == "bad value" + std::string(kHeading) +
                                 "\n  innerStep\n  middleRethrowing\n  outerOfRethrowing");
  }
  checkDispatcherEmpty();
}

TEST_CASE("traceback: asyncCheck of a failed coroutine rethrows from poll with the traceback in "
          "what()") {
  asyncCheck(fireAndForget());
  std::string message;
  bool asValueError = false;
  const Clock::time_point start = Clock::now();
  while (message.empty() && msSince(start) < 2000 && hasPendingOperations()) {
    try {
      poll(5);
    } catch (const ValueError& e) {
      asValueError = true;
      message = e.what();
    }
  }
  CHECK(asValueError);
  CHECK(names(message) == "bad value" + kThreeFrames + "\n  fireAndForget");
  runDry();
  checkDispatcherEmpty();
}

TEST_CASE("traceback: an error that passes through no coroutine is its bare message") {
  const ValueError direct("plain message");
  CHECK(std::string(direct.what()) == "plain message");
  CHECK(direct.traceback().empty());

  Future<int> byHand = newFuture<int>("byHand");
  byHand.fail(IOError("failed by hand"));
  CHECK_THROWS_WITH_AS(byHand.read(), "failed by hand", IOError);

  const OSError os(ECONNRESET, "recv(fd 3)");
  CHECK(std::string(os.what()) == "recv(fd 3): " + std::system_category().message(ECONNRESET));
  CHECK(os.traceback().empty());

  // A library error that reaches its caller directly, without a coroutine.
  auto [client, server] = connectedPair();
  Future<std::string> received = recv(server, 100, {});
  poll(0);
  const linger reset{1, 0};
#if defined(_WIN32)
  REQUIRE(::setsockopt(static_cast<SOCKET>(client), SOL_SOCKET, SO_LINGER,
                       reinterpret_cast<const char*>(&reset), sizeof reset) == 0);
#else
  REQUIRE(::setsockopt(static_cast<int>(client), SOL_SOCKET, SO_LINGER, &reset, sizeof reset) == 0);
#endif
  closeSocket(client);
  settle(received, 2000);
  try {
    received.read();
    FAIL("read() did not throw");
  } catch (const OSError& e) {
    CHECK(std::string(e.what()) ==
          "recv(" + fdText(server) + "): " + std::system_category().message(resetCode(e)));
    CHECK(e.traceback().empty());
  }
  closeSocket(server);
  checkDispatcherEmpty();
}

TEST_CASE("traceback: each frame names the coroutine's file and line, as Nim's frames do") {
  Future<int> fut = outerStep(Kind::IO);
  settle(fut, 2000);
  try {
    fut.read();
    FAIL("read() did not throw");
  } catch (const IOError& e) {
    const std::vector<Frame> frames = framesOf(e.traceback());
    REQUIRE(frames.size() == 3);
    const int first[] = {kInnerFirst, kInnerLast, kMiddleLast};
    const int last[] = {kInnerLast, kMiddleLast, kOuterLast};
    const char* const name[] = {"innerStep", "middleStep", "outerStep"};
    for (std::size_t i = 0; i < frames.size(); ++i) {
      CHECK(frames[i].file == __FILE__);
      CHECK(frames[i].line > first[i]);
      CHECK(frames[i].line < last[i]);
      CHECK(frames[i].name == name[i]);
    }
    CHECK(std::string(e.what()).find("\n  " + frames[0].file + "(" +
                                     std::to_string(frames[0].line) + ") innerStep\n") !=
          std::string::npos);
  }
  checkDispatcherEmpty();
}

TEST_CASE("traceback: two coroutines awaiting one failed future each show their own path, and the "
          "future keeps its own") {
  Future<int> shared = innerStep(Kind::Value);
  Future<int> left = leftBranch(shared);
  Future<int> right = rightBranch(shared);
  // `and` fails with left at once; its other side is settled too, so no timer outlives the case
  // however slowly it runs (valgrind).
  Future<void> pause = sleepAsync(1);
  Future<void> both = left && pause;
  settle(left, 2000);
  settle(right, 2000);
  settle(both, 2000);
  settle(pause, 2000);
  const std::string heading = std::string("bad value") + kHeading;
  for (int round = 0; round < 2; ++round) { // reading one path never changes what another shows
    CHECK(names(storedWhat(left)) == heading + "\n  innerStep\n  leftBranch");
    try {
      right.read();
      FAIL("read() did not throw");
    } catch (const ValueError& e) {
      CHECK(names(e.what()) == heading + "\n  innerStep\n  rightBranch");
      CHECK(names(e.traceback()) == "  innerStep\n  rightBranch\n");
    }
    try {
      left.read();
      FAIL("read() did not throw");
    } catch (const ValueError& e) {
      CHECK(names(e.what()) == heading + "\n  innerStep\n  leftBranch");
    }
    CHECK(names(storedWhat(shared)) == heading + "\n  innerStep");
    CHECK(names(storedWhat(both)) == heading + "\n  innerStep\n  leftBranch"); // through `and`
  }
  checkDispatcherEmpty();
}

TEST_CASE("traceback: a failed future awaited 10,000 times leaves the what() of its stored error "
          "unchanged") {
  Future<int> shared = innerStep(Kind::OS);
  settle(shared, 2000);
  const std::string before = storedWhat(shared);
  REQUIRE(names(before).find("\n  innerStep") != std::string::npos);
  for (int i = 0; i < 10000; ++i) {
    Future<int> passed = awaitOnce(shared); // fails at once: the future already failed
    REQUIRE(passed.failed());
  }
  CHECK(storedWhat(shared) == before);
  Future<int> last = awaitOnce(shared);
  CHECK(names(storedWhat(last)) == names(before) + "\n  awaitOnce");
  CHECK(storedWhat(shared) == before);
  checkDispatcherEmpty();
}

TEST_CASE("traceback: an error through a pipeline of 10,000 coroutines shows every frame") {
  constexpr int kStages = 10000;
  Future<int> first = newFuture<int>("first");
  Future<int> last = first;
  for (int i = 0; i < kStages; ++i)
    last = passOn(last); // each waits for the one before: no stage nests in another's call
  first.fail(IOError("at the start"));
  settle(last, 20000);
  try {
    last.read();
    FAIL("read() did not throw");
  } catch (const IOError& e) {
    const std::string& trace = e.traceback();
    CHECK(std::count(trace.begin(), trace.end(), '\n') == kStages);
    CHECK(trace.find(") passOn\n") != std::string::npos);
  }
  first = Future<int>();
  last = Future<int>();
  checkDispatcherEmpty();
}

TEST_CASE("traceback: a chain of a million frames is freed without a recursion as deep as the "
          "chain") {
  TracebackChain chain;
  for (int i = 0; i < 1000000; ++i)
    chain = std::make_shared<TracebackFrame>(TracebackFrame{"stage", __FILE__, i, chain});
  CHECK(chain->line == 999999);
  chain.reset(); // a recursive release would need hundreds of megabytes of stack
  CHECK(chain == nullptr);
  checkDispatcherEmpty();
}
