// dumpDispatcher: the live dispatcher printed in the notation of Nim's drawing, following the
// structure as descriptors, timers and callbacks come and go.
#if !defined(_WIN32)
#include <sys/socket.h>
#endif

#include <chrono>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

namespace {

std::string dump(const PDispatcher& p = getGlobalDispatcher()) {
  std::ostringstream os;
  dumpDispatcher(os, p);
  return os.str();
}

std::vector<std::string> linesOf(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  return lines;
}

#if defined(_WIN32)
// The line that shows fd in Nim's `handles` ("    260", or "    260 (in flight: recv)"), or ""
// when fd is not in the set.
std::string keyLine(const std::string& text, AsyncFD fd) {
  const std::string name = "    " + std::to_string(static_cast<int>(fd));
  bool inHandles = false;
  for (const std::string& line : linesOf(text)) {
    if (has(line, "handles: HashSet[AsyncFD]")) inHandles = true;
    if (has(line, "waits: Table")) break;
    if (inHandles &&
        (line == name || line.rfind(name + " ", 0) == 0 || line.rfind(name + ",", 0) == 0))
      return line;
  }
  return "";
}

// The line that shows fd's WaitKey, or "" when fd is not waited on.
std::string waitLine(const std::string& text, AsyncFD fd) {
  const std::string key = "WaitKey { fd: " + std::to_string(static_cast<int>(fd)) + ",";
  for (const std::string& line : linesOf(text)) {
    if (has(line, key)) return line;
  }
  return "";
}
#else
// The line that shows fd's SelectorKey, or "" when fd is not in the table.
std::string keyLine(const std::string& text, AsyncFD fd) {
  const std::string key = "SelectorKey { fd: " + std::to_string(static_cast<int>(fd)) + ",";
  for (const std::string& line : linesOf(text)) {
    if (has(line, key)) return line;
  }
  return "";
}
#endif

// The lines that show a pending timer.
std::vector<std::string> timerLines(const std::string& text) {
  std::vector<std::string> timers;
  for (const std::string& line : linesOf(text)) {
    if (has(line, "finishAt:")) timers.push_back(line);
  }
  return timers;
}

// The first whole number on the callbacks line, or -1.
int callbacksShown(const std::string& text) {
  static const std::regex number(R"(\b(\d+)\b)");
  for (const std::string& line : linesOf(text)) {
    if (!has(line, "callbacks")) continue;
    std::smatch m;
    if (std::regex_search(line, m, number)) return std::stoi(m[1].str());
  }
  return -1;
}

// The selector's kernel handle as the dump shows it ("epollFD: 3" on Linux; on Windows the
// completion port, "ioPort: Handle 0x5c"; on poll the array it polls, "pollFDs: array[0, pollfd]").
std::string kernelHandle(const PDispatcher& p) {
#if defined(_WIN32)
  std::ostringstream os;
  os << "ioPort: Handle " << getIoHandler(p);
  return os.str();
#elif defined(ASYNCDISPATCH_BACKEND_KQUEUE)
  return "kqFD: " + std::to_string(getIoHandler(p).kqFD);
#elif defined(ASYNCDISPATCH_BACKEND_EVENTPORTS)
  return "portFD: " + std::to_string(getIoHandler(p).portFD);
#elif defined(ASYNCDISPATCH_BACKEND_POLL) // no kernel object: the array poll(2) is handed
  return "pollFDs: array[" + std::to_string(getIoHandler(p).pollFDs.size()) + ", pollfd]";
#else
  return "epollFD: " + std::to_string(getIoHandler(p).epollFD);
#endif
}

} // namespace

#if defined(_WIN32)
[[maybe_unused]] const bool skeletonCaseOut = testsupport::compiledOut(
    "tests/dump.cpp: \"dumpDispatcher: prints the drawing's skeleton for an empty dispatcher\"",
    "the IOCP dispatcher has no selector: a Windows case checks Nim's Windows skeleton instead");
TEST_CASE("dumpDispatcher: prints Nim's Windows skeleton for an empty dispatcher (Windows)") {
  const PDispatcher p = newDispatcher();
  const std::string text = dump(p);
  CHECK(text.rfind("p: PDispatcher {", 0) == 0);
  CHECK(has(text, kernelHandle(p)));
  CHECK(has(text, "handles: HashSet[AsyncFD] {}"));
  CHECK(has(text, "waits: Table[AsyncFD, WaitKey] {}"));
  CHECK(has(text, "timers"));
  CHECK(callbacksShown(text) == 0);
  CHECK(timerLines(text).empty());
  // The order of Nim's Windows PDispatcher: ioPort, handles, then what every backend shares.
  CHECK(text.find(kernelHandle(p)) < text.find("handles:"));
  CHECK(text.find("handles:") < text.find("waits:"));
  CHECK(text.find("waits:") < text.find("timers"));
  CHECK(text.find("timers") < text.find("callbacks"));
  checkDispatcherEmpty();
}
#else
[[maybe_unused]] const bool windowsSkeletonCaseOut = testsupport::compiledOut(
    "tests/dump.cpp: \"dumpDispatcher: prints Nim's Windows skeleton for an empty dispatcher "
    "(Windows)\"",
    "the IOCP dispatcher's ioPort and handles; the selector's skeleton is checked here instead");
TEST_CASE("dumpDispatcher: prints the drawing's skeleton for an empty dispatcher") {
  const PDispatcher p = newDispatcher();
  const std::string text = dump(p);
  CHECK(text.rfind("p: PDispatcher {", 0) == 0);
  CHECK(has(text, "selector: Selector {"));
  CHECK(has(text, kernelHandle(p)));
  CHECK(has(text, "fds:"));
  CHECK(has(text, "timers"));
  CHECK(callbacksShown(text) == 0);
  CHECK_FALSE(has(text, "SelectorKey {"));
  CHECK(timerLines(text).empty());
  // The nesting of the drawing: selector inside p, epollFD and fds inside selector, timers after.
  const std::size_t selector = text.find("selector: Selector {");
  const std::string handle = kernelHandle(p);
  CHECK(selector < text.find(handle));
  CHECK(text.find(handle) < text.find("fds:"));
  CHECK(text.find("fds:") < text.find("timers"));
  CHECK(text.find("timers") < text.find("callbacks"));
  checkDispatcherEmpty();
}
#endif

TEST_CASE("dumpDispatcher: prints the dispatcher it is given, by default the global one") {
  const AsyncFD fd = createAsyncNativeSocket();
  const std::string global = dump();
  std::ostringstream byDefault;
  dumpDispatcher(byDefault);
  CHECK(byDefault.str() == global);
  CHECK(has(global, kernelHandle(getGlobalDispatcher())));
  CHECK(keyLine(global, fd) != "");

  const PDispatcher other = newDispatcher();
  const std::string otherText = dump(other);
  CHECK(has(otherText, kernelHandle(other)));
  CHECK(keyLine(otherText, fd) == ""); // registered with the global dispatcher only
  closeSocket(fd);
  checkDispatcherEmpty();
}

#if defined(_WIN32)
[[maybe_unused]] const bool keyLineCasesOut =
    testsupport::compiledOut("tests/dump.cpp: the 2 cases on a waiting descriptor's SelectorKey "
                             "line ({Read}, {Read, Write})",
                             "the IOCP dispatcher has no selector: 3 Windows cases show operations "
                             "in flight and waits instead");
TEST_CASE("dumpDispatcher: a handle with a recv in flight shows it by name until it completes "
          "(Windows)") {
  auto [client, server] = connectedPair();
  const std::string fd = std::to_string(static_cast<int>(server));
  CHECK(keyLine(dump(), server) == "    " + fd + ","); // registered, nothing in flight

  Future<std::string> received = recv(server, 100);
  CHECK(has(keyLine(dump(), server), fd + " (in flight: recv)"));
  CHECK(has(dump(), "(1 CustomOverlapped in flight, 0 of them abandoned)"));

  REQUIRE(::send(static_cast<SOCKET>(client), "x", 1, 0) == 1);
  CHECK(waitWithin(received) == "x");
  CHECK_FALSE(has(keyLine(dump(), server), "in flight"));

  closeSocket(server);
  CHECK(keyLine(dump(), server) == "");
  closeSocket(client);
  checkDispatcherEmpty();
}

TEST_CASE("dumpDispatcher: a handle with a send and a recv in flight shows both (Windows)") {
  auto [client, server] = connectedPair();
  // A peer that does not read and small buffers keep the send waiting.
  setSockOptInt(client, SOL_SOCKET, SO_SNDBUF, 4096);
  setSockOptInt(server, SOL_SOCKET, SO_RCVBUF, 4096);
  Future<void> sent = send(client, std::string(8 << 20, 'x'));
  for (int i = 0; i < 5; ++i)
    poll(10);
  REQUIRE_FALSE(sent.finished());
  CHECK(has(keyLine(dump(), client), "(in flight: send)"));

  Future<std::string> received = recv(client, 10);
  CHECK(has(keyLine(dump(), client), "(in flight: send, recv)"));

  closeSocket(client); // fails both operations; their completions are still to come
  settle(sent);
  settle(received);
  CHECK(sent.failed());
  CHECK(received.failed());
  CHECK(keyLine(dump(), client) == "");
  runDry();
  closeSocket(server);
  checkDispatcherEmpty();
}

TEST_CASE("dumpDispatcher: lists the waits of addTimer, addEvent, addProcess, addRead and addWrite "
          "as keys with their callbacks (Windows)") {
  auto [client, server] = connectedPair();
  addTimer(60000, false, [](AsyncFD) { return false; });
  AsyncEvent ev = newAsyncEvent();
  addEvent(ev, [](AsyncFD) { return false; });
  addProcess(static_cast<int>(GetCurrentProcessId()), [](AsyncFD) { return true; });
  addRead(server, [](AsyncFD) { return true; });
  addRead(server, [](AsyncFD) { return true; });
  addWrite(server, [](AsyncFD) { return true; });
  const std::string text = dump();
  const PDispatcher p = getGlobalDispatcher();
  CHECK(p->waits.size() == 4);
  for (const auto& [fd, key] : p->waits) {
    const std::string line = waitLine(text, fd);
    const std::string name = std::to_string(static_cast<int>(fd));
    CHECK(has(line, name + ": WaitKey { fd: " + name + ", events: "));
    if (key.events.contains(Event::Timer)) {
      CHECK(
          has(line, "events: {Timer}, data: PData { fd: " + name + ", readCBs: 1, writeCBs: 0 }"));
    } else if (key.events.contains(Event::User)) {
      CHECK(has(line, "events: {User}, data: PData { fd: " + name + ", readCBs: 1, writeCBs: 0 }"));
    } else if (key.events.contains(Event::Process)) {
      CHECK(has(line, "events: {Process, Oneshot}, param: " +
                          std::to_string(GetCurrentProcessId()) + ", data: PData"));
    } else {
      CHECK(fd == server);
      CHECK(has(line, "events: {Read, Write}, data: PData { fd: " + name +
                          ", readCBs: 2, writeCBs: 1 }"));
    }
  }
  // The waits come after the handles and before the timers, sorted by handle.
  CHECK(text.find("handles:") < text.find("waits:"));
  CHECK(text.find("waits:") < text.find("timers"));
  unregister(ev);
  close(ev);
  closeSocket(server); // calls its callbacks once more, and they go
  closeSocket(client);
  CHECK(p->waits.size() == 2); // the timer and the process, whose handle the test cannot close
  std::vector<AsyncFD> left;
  for (const auto& [fd, key] : p->waits)
    left.push_back(fd);
  for (AsyncFD fd : left)
    unregister(fd);
  CHECK(has(dump(), "waits: Table[AsyncFD, WaitKey] {}"));
  checkDispatcherEmpty();
}
#else
[[maybe_unused]] const bool inFlightCasesOut = testsupport::compiledOut(
    "tests/dump.cpp: the 3 Windows cases on operations in flight and the waits of addTimer, "
    "addEvent, addProcess, addRead and addWrite",
    "the IOCP dispatcher's handles and waits; the selector's key lines are checked here instead");
TEST_CASE("dumpDispatcher: a descriptor with a waiting recv shows events {Read} and readCBs: 1") {
  auto [client, server] = connectedPair();
  std::string line = keyLine(dump(), server);
  CHECK(has(line, "events: {}")); // registered, nothing waiting yet
  CHECK(has(line, "readCBs: 0"));

  Future<std::string> received = recv(server, 100);
  line = keyLine(dump(), server);
  CHECK(has(line,
            "SelectorKey { fd: " + std::to_string(static_cast<int>(server)) + ", events: {Read}"));
  CHECK(has(line, "fd: " + std::to_string(static_cast<int>(server))));
  CHECK(has(line, "readCBs: 1"));
  CHECK(has(line, "writeCBs: 0"));

  REQUIRE(sendNoSigpipe(static_cast<int>(client), "x", 1) == 1);
  CHECK(waitWithin(received) == "x");
  line = keyLine(dump(), server);
  CHECK(has(line, "events: {}"));
  CHECK(has(line, "readCBs: 0"));

  closeSocket(server);
  CHECK(keyLine(dump(), server) == "");
  closeSocket(client);
  checkDispatcherEmpty();
}

TEST_CASE("dumpDispatcher: a descriptor waiting in both directions shows {Read, Write} and both "
          "counts") {
  auto [client, server] = connectedPair();
  // A peer that does not read and small buffers keep the send waiting.
  setSockOptInt(client, SOL_SOCKET, SO_SNDBUF, 4096);
  setSockOptInt(server, SOL_SOCKET, SO_RCVBUF, 4096);
  Future<void> sent = send(client, std::string(8 << 20, 'x'));
  for (int i = 0; i < 5; ++i)
    poll(10);
  REQUIRE_FALSE(sent.finished());
  std::string line = keyLine(dump(), client);
  CHECK(has(line, "events: {Write}"));
  CHECK(has(line, "readCBs: 0"));
  CHECK(has(line, "writeCBs: 1"));

  Future<std::string> received = recv(client, 10);
  line = keyLine(dump(), client);
  CHECK(has(line, "events: {Read, Write}"));
  CHECK(has(line, "readCBs: 1"));
  CHECK(has(line, "writeCBs: 1"));

  closeSocket(client); // fails both operations
  settle(sent);
  settle(received);
  CHECK(sent.failed());
  CHECK(received.failed());
  CHECK(keyLine(dump(), client) == "");
  closeSocket(server);
  checkDispatcherEmpty();
}
#endif

TEST_CASE("dumpDispatcher: lists each pending timer with its fromProc until it fires") {
  Future<void> later = sleepAsync(60);
  Future<void> sooner = sleepAsync(20);
  std::vector<std::string> timers = timerLines(dump());
  REQUIRE(timers.size() == 2);
  for (const std::string& line : timers)
    CHECK(has(line, later.fromProc()));

  waitWithin(sooner);
  timers = timerLines(dump());
  REQUIRE(timers.size() == 1);
  CHECK(has(timers[0], later.fromProc()));

  waitWithin(later);
  CHECK(timerLines(dump()).empty());
  checkDispatcherEmpty();
}

TEST_CASE("dumpDispatcher: shows how many callbacks are queued") {
  int ran = 0;
  for (int i = 0; i < 3; ++i)
    callSoon([&ran] { ++ran; });
  CHECK(callbacksShown(dump()) == 3);
  poll(0);
  CHECK(ran == 3);
  CHECK(callbacksShown(dump()) == 0);
  checkDispatcherEmpty();
}

#if defined(_WIN32)
[[maybe_unused]] const bool listenerCaseOut =
    testsupport::compiledOut("tests/dump.cpp: \"dumpDispatcher: follows a listening socket through "
                             "register, accept and close\"",
                             "its SelectorKey lines are the selector's: a Windows case follows the "
                             "socket in handles instead");
TEST_CASE("dumpDispatcher: follows a listening socket through register, accept and close "
          "(Windows)") {
  const std::string before = dump();
  const AsyncFD fd = createAsyncNativeSocket();
  const std::string registered = dump();
  CHECK(registered != before);
  CHECK(keyLine(before, fd) == "");
  CHECK(keyLine(registered, fd) != "");
  CHECK_FALSE(has(keyLine(registered, fd), "in flight"));

  bindAddr(fd, Port(0), "127.0.0.1");
  listen(fd);
  Future<AcceptResult> accepted = acceptAddr(fd);
  CHECK(has(keyLine(dump(), fd), "(in flight: acceptAddr)"));

  const AsyncFD client = waitWithin(dial("127.0.0.1", getLocalAddr(fd).second));
  const AcceptResult peer = waitWithin(accepted);
  const std::string connected = dump();
  CHECK_FALSE(has(keyLine(connected, fd), "in flight"));
  CHECK(keyLine(connected, client) != ""); // dial's and accept's sockets are registered too
  CHECK(keyLine(connected, peer.client) != "");

  closeSocket(peer.client);
  closeSocket(client);
  closeSocket(fd);
  const std::string after = dump();
  CHECK(keyLine(after, fd) == "");
  CHECK(keyLine(after, client) == "");
  CHECK(keyLine(after, peer.client) == "");
  checkDispatcherEmpty();
}
#else
[[maybe_unused]] const bool windowsListenerCaseOut = testsupport::compiledOut(
    "tests/dump.cpp: \"dumpDispatcher: follows a listening socket through register, accept and "
    "close (Windows)\"",
    "it follows the IOCP dispatcher's handles; the case here follows the selector's fds table");
TEST_CASE("dumpDispatcher: follows a listening socket through register, accept and close") {
  const std::string before = dump();
  const AsyncFD fd = createAsyncNativeSocket();
  const std::string registered = dump();
  CHECK(registered != before);
  CHECK(keyLine(before, fd) == "");
  CHECK(has(keyLine(registered, fd), "events: {}"));

  bindAddr(fd, Port(0), "127.0.0.1");
  listen(fd);
  Future<AcceptResult> accepted = acceptAddr(fd);
  CHECK(has(keyLine(dump(), fd), "events: {Read}"));
  CHECK(has(keyLine(dump(), fd), "readCBs: 1"));

  const AsyncFD client = waitWithin(dial("127.0.0.1", getLocalAddr(fd).second));
  const AcceptResult peer = waitWithin(accepted);
  const std::string connected = dump();
  CHECK(has(keyLine(connected, fd), "events: {}"));
  CHECK(keyLine(connected, client) != ""); // dial's and accept's sockets are registered too
  CHECK(keyLine(connected, peer.client) != "");

  closeSocket(peer.client);
  closeSocket(client);
  closeSocket(fd);
  const std::string after = dump();
  CHECK(keyLine(after, fd) == "");
  CHECK(keyLine(after, client) == "");
  CHECK(keyLine(after, peer.client) == "");
  checkDispatcherEmpty();
}
#endif
