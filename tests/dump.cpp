// dumpDispatcher: the live dispatcher printed in the notation of Nim's drawing, following the
// structure as descriptors, timers and callbacks come and go.
#include <sys/socket.h>

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

// The line that shows fd's SelectorKey, or "" when fd is not in the table.
std::string keyLine(const std::string& text, AsyncFD fd) {
  const std::string key = "SelectorKey { fd: " + std::to_string(static_cast<int>(fd)) + ",";
  for (const std::string& line : linesOf(text)) {
    if (has(line, key)) return line;
  }
  return "";
}

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

// The selector's kernel handle as the dump shows it ("epollFD: 3" on Linux).
std::string kernelHandle(const PDispatcher& p) {
#if defined(ASYNCDISPATCH_BACKEND_KQUEUE)
  return "kqFD: " + std::to_string(getIoHandler(p).kqFD);
#elif defined(ASYNCDISPATCH_BACKEND_EVENTPORTS)
  return "portFD: " + std::to_string(getIoHandler(p).portFD);
#else
  return "epollFD: " + std::to_string(getIoHandler(p).epollFD);
#endif
}

} // namespace

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

  REQUIRE(::send(static_cast<int>(client), "x", 1, MSG_NOSIGNAL) == 1);
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
