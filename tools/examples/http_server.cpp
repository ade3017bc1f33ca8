// An HTTP/1.1 server: keep-alive, pipelined requests, Content-Length bodies, bounded memory per
// connection, a deadline for each request so that a client that sends half a header (slowloris)
// cannot hold a connection, and a graceful stop on SIGINT or SIGTERM.
//
//   build/bin/http_server PORT [REQUEST_TIMEOUT_MS]   (PORT 0: the kernel picks one; a request,
//                                                       header and body, must arrive within
//                                                       REQUEST_TIMEOUT_MS, default 10000)
//
//   GET or HEAD / and /hello   200 with a fixed body (the bench serves nginx the same bytes)
//   POST /echo                 200 with the request's body
//   another method there       405;  another path: 404;  a malformed request: 400 and close
//
// The stop closes the listener and the connections waiting for a request, lets every request
// already begun arrive and be answered (with Connection: close), then exits 0.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <signal.h>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>

#include <asyncdispatch.hpp>

#include "http_request.hpp"

using namespace asyncdispatch;

namespace {

constexpr std::string_view kBody = "Hello, World!\n";
constexpr int kDefaultRequestTimeoutMs = 10000;
// A keep-alive connection may wait this long for its next request (nginx waits 75 s).
constexpr int kIdleTimeoutMs = 60000;
// A client that does not read its responses is dropped after this long.
constexpr int kSendTimeoutMs = 30000;
// How often the deadlines are checked and the Date header refreshed: a deadline is met to
// within this much, without a timer per request.
constexpr int kSweepMs = 250;
// After its last response a connection the server ends is shut for writing and read until the
// client closes, for at most this long or this many bytes: closing with unread input would send a
// reset, which can destroy the response before the client reads it (a 400 to a long header).
constexpr int kLingerMs = 2000;
constexpr std::size_t kLingerBytes = 256 * 1024;
// The input buffer starts with room for the largest header and grows only for bodies, to at
// most one request; the output buffer is sent once it holds this much (pipelined answers).
constexpr std::size_t kInitialBuffer = http::kMaxHeaderBytes;
constexpr std::size_t kMaxBuffer = http::kMaxHeaderBytes + http::kMaxBodyBytes;
constexpr std::size_t kFlushBytes = 64 * 1024;

// One connection's entry in the server's list: its coroutine frame owns it.
struct Connection {
  AsyncFD fd{-1};
  Connection* prev = nullptr;
  Connection* next = nullptr;
  std::int64_t deadline = 0; // on Server::now's clock
  bool idle = true;          // waiting for a request with none of it received
  bool open = true;          // false once the sweep or the stop closed it
};

struct Server {
  AsyncFD listener{-1};
  Connection list; // the sentinel of a circular list of the open connections
  std::size_t connections = 0;
  std::int64_t now = 0; // milliseconds on the monotonic clock, as of the last sweep
  std::time_t dateSecond = -1;
  char date[32] = {}; // the Date header's value: an IMF-fixdate, 29 characters
  int requestTimeoutMs = kDefaultRequestTimeoutMs;
  bool accepting = true;
  bool stopping = false;

  Server() { list.prev = list.next = &list; }
};

void link(Server& s, Connection& c) {
  c.prev = s.list.prev;
  c.next = &s.list;
  s.list.prev->next = &c;
  s.list.prev = &c;
  ++s.connections;
}

// Closes a connection that its coroutine still owns: the operation it waits in fails, and the
// coroutine, seeing `open` false, leaves the closing to this.
void drop(Server& s, Connection& c) {
  c.prev->next = c.next;
  c.next->prev = c.prev;
  c.open = false;
  --s.connections;
  closeSocket(c.fd);
}

void tick(Server& s) {
  s.now = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now().time_since_epoch())
              .count();
  const std::time_t t = std::time(nullptr);
  if (t == s.dateSecond) return;
  s.dateSecond = t;
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(s.date, sizeof s.date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

// Closes the connections whose deadline has passed; returns true (remove the timer) once the
// server has stopped and the last connection is gone.
bool sweep(Server& s) {
  tick(s);
  for (Connection* c = s.list.next; c != &s.list;) {
    Connection* next = c->next;
    if (c->deadline <= s.now) drop(s, *c);
    c = next;
  }
  return s.stopping && s.connections == 0;
}

std::string_view reason(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 413:
    return "Content Too Large";
  case 501:
    return "Not Implemented";
  case 505:
    return "HTTP Version Not Supported";
  }
  return "Error";
}

std::string_view errorBody(int status) {
  switch (status) {
  case 413:
    return "content too large\n";
  case 501:
    return "not implemented\n";
  case 505:
    return "http version not supported\n";
  }
  return "bad request\n";
}

// Appends one response. `head` leaves the body out but keeps its length, as HEAD asks.
void appendResponse(const Server& s, std::string& out, int status, std::string_view body,
                    bool keepAlive, int minorVersion, bool head = false,
                    std::string_view extraHeaders = {}) {
  char status3[4], length[24];
  std::to_chars(status3, status3 + 3, status);
  const auto lengthEnd = std::to_chars(length, length + sizeof length, body.size()).ptr;
  out.append("HTTP/1.1 ").append(status3, 3).append(" ").append(reason(status));
  out.append("\r\nServer: asyncdispatch\r\nDate: ").append(s.date, 29);
  out.append("\r\nContent-Type: text/plain\r\nContent-Length: ").append(length, lengthEnd);
  out.append("\r\n").append(extraHeaders);
  // HTTP/1.1 keeps the connection unless told; an HTTP/1.0 client closes unless told.
  if (!keepAlive) {
    out.append("Connection: close\r\n");
  } else if (minorVersion == 0) {
    out.append("Connection: keep-alive\r\n");
  }
  out.append("\r\n");
  if (!head) out.append(body);
}

// Appends the answer to one whole request (header and body); returns whether the connection
// stays open after it.
bool respond(const Server& s, std::string& out, const http::Request& r, std::string_view request) {
  const std::string_view method = r.method(request);
  std::string_view path = r.target(request);
  path = path.substr(0, path.find('?'));
  const bool keepAlive = r.keepAlive && !s.stopping;
  const int v = r.minorVersion;
  if (path == "/" || path == "/hello") {
    if (method == "GET" || method == "HEAD") {
      appendResponse(s, out, 200, kBody, keepAlive, v, method == "HEAD");
    } else {
      appendResponse(s, out, 405, "method not allowed\n", keepAlive, v, false,
                     "Allow: GET, HEAD\r\n");
    }
  } else if (path == "/echo") {
    if (method == "POST") {
      appendResponse(s, out, 200, request.substr(r.headerBytes, r.contentLength), keepAlive, v);
    } else {
      appendResponse(s, out, 405, "method not allowed\n", keepAlive, v, false, "Allow: POST\r\n");
    }
  } else {
    appendResponse(s, out, 404, "not found\n", keepAlive, v);
  }
  return keepAlive;
}

// One connection: receive into the buffer, answer every whole request in it into `out`, send
// `out` at once (one write for a batch of pipelined requests), repeat. Nothing is allocated per
// request: both buffers are the connection's and keep their capacity.
Future<void> serveConnection(Server& s, AsyncFD fd) {
  Connection c;
  c.fd = fd;
  link(s, c);
  std::size_t capacity = kInitialBuffer;
  std::unique_ptr<char[]> in(new char[capacity]); // not zeroed: recv fills it
  std::size_t begin = 0, end = 0;                 // the unanswered bytes: [begin, end)
  std::size_t want = 0;                           // a whole request's size, once its header says
  std::string out;
  out.reserve(4096);
  http::RequestParser parser;
  bool keepAlive = true;
  // The first request's clock starts at the connection: one that never sends is a slowloris too.
  bool requestTimed = true;
  std::int64_t waitDeadline = s.now + s.requestTimeoutMs;
  bool peerClosed = false;
  try {
    for (;;) {
      // The request in progress moves to the front, and the buffer grows to hold all of it.
      if (begin > 0) {
        std::memmove(in.get(), in.get() + begin, end - begin);
        end -= begin;
        begin = 0;
      }
      const std::size_t needed = want > end + 1 ? want : end + 1;
      if (needed > capacity) {
        const std::size_t grown = needed > capacity * 2 ? needed : capacity * 2;
        capacity = grown < kMaxBuffer ? grown : kMaxBuffer;
        std::unique_ptr<char[]> bigger(new char[capacity]);
        std::memcpy(bigger.get(), in.get(), end);
        in = std::move(bigger);
      }
      c.deadline = waitDeadline;
      c.idle = end == 0;
      const int n = co_await recvInto(fd, in.get() + end, static_cast<int>(capacity - end));
      c.idle = false;
      peerClosed = n == 0;
      if (peerClosed || !c.open) break;
      end += static_cast<std::size_t>(n);

      while (begin < end) {
        const std::string_view data(in.get() + begin, end - begin);
        const http::ParseStatus status = parser.parse(data);
        if (status == http::ParseStatus::Incomplete) break;
        if (status == http::ParseStatus::Error) {
          appendResponse(s, out, parser.errorStatus(), errorBody(parser.errorStatus()), false, 1);
          keepAlive = false;
          break;
        }
        const http::Request& r = parser.request();
        want = r.headerBytes + r.contentLength;
        if (data.size() < want) break; // the body is still on its way
        keepAlive = respond(s, out, r, data.substr(0, want));
        begin += want;
        want = 0;
        parser.reset();
        requestTimed = false;
        if (!keepAlive) break;
        if (out.size() >= kFlushBytes) {
          c.deadline = s.now + kSendTimeoutMs;
          co_await send(fd, out.data(), static_cast<int>(out.size()));
          out.clear();
          if (!c.open) break;
        }
      }
      if (!out.empty()) {
        c.deadline = s.now + kSendTimeoutMs;
        co_await send(fd, out.data(), static_cast<int>(out.size()));
        out.clear();
      }
      if (!keepAlive || !c.open || (s.stopping && begin == end)) break;
      if (begin == end) {
        waitDeadline = s.now + kIdleTimeoutMs;
      } else if (!requestTimed) { // a new request has begun: its clock starts now
        waitDeadline = s.now + s.requestTimeoutMs;
        requestTimed = true;
      }
    }
    if (c.open && !peerClosed) {
      ::shutdown(static_cast<int>(fd), SHUT_WR);
      c.deadline = s.now + kLingerMs;
      for (std::size_t discarded = 0; discarded < kLingerBytes && c.open;) {
        const int n = co_await recvInto(fd, in.get(), static_cast<int>(capacity));
        if (n == 0) break;
        discarded += static_cast<std::size_t>(n);
      }
    }
  } catch (const OSError&) {
    // The sweep or the stop closed the connection, or the peer reset it.
  }
  if (c.open) drop(s, c);
}

Future<void> acceptConnections(Server& s) {
  while (!s.stopping) {
    AsyncFD client{-1};
    try {
      client = co_await accept(s.listener);
    } catch (const OSError& e) {
      if (s.stopping) break; // the stop closed the listener
      std::cerr << "http_server: accept: " << e.what() << std::endl;
    }
    if (client == AsyncFD(-1)) { // a failure other than the stop: try again, not in a busy loop
      co_await sleepAsync(100);
      continue;
    }
    if (s.stopping) { // accepted in the pass that stopped the server, after the stop ran
      closeSocket(client);
      break;
    }
    setSockOptInt(client, IPPROTO_TCP, TCP_NODELAY, 1); // answer without Nagle's delay
    asyncCheck(serveConnection(s, client));
  }
  s.accepting = false;
}

// The graceful stop: no new connections, and none kept waiting for a request that has not begun.
void stop(Server& s) {
  if (s.stopping) return;
  s.stopping = true;
  closeSocket(s.listener);
  for (Connection* c = s.list.next; c != &s.list;) {
    Connection* next = c->next;
    if (c->idle) drop(s, *c);
    c = next;
  }
}

int usage() {
  std::cerr << "usage: http_server PORT [REQUEST_TIMEOUT_MS]\n";
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) return usage();
  const int port = std::atoi(argv[1]);
  const int timeout = argc == 3 ? std::atoi(argv[2]) : kDefaultRequestTimeoutMs;
  if (port < 0 || port > 65535 || timeout <= 0) return usage();

  Server s;
  s.requestTimeoutMs = timeout;
  tick(s);
  try {
    s.listener = createAsyncNativeSocket();
    setSockOptInt(s.listener, SOL_SOCKET, SO_REUSEADDR, 1);
    bindAddr(s.listener, Port(port), "127.0.0.1");
    listen(s.listener);
  } catch (const std::exception& e) {
    std::cerr << "http_server: " << e.what() << "\n";
    return 1;
  }
  std::cout << "http_server: listening on 127.0.0.1:"
            << static_cast<int>(getLocalAddr(s.listener).second) << std::endl;

  auto onSignal = [&s](AsyncFD) {
    stop(s);
    return true;
  };
  addSignal(SIGINT, onSignal);
  addSignal(SIGTERM, onSignal);
  addTimer(kSweepMs, false, [&s](AsyncFD) { return sweep(s); });
  asyncCheck(acceptConnections(s));
  while (s.accepting || s.connections > 0)
    poll(kSweepMs);
  std::cout << "http_server: stopped" << std::endl;
  return 0;
}
