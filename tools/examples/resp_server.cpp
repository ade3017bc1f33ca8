// A Redis-protocol (RESP) key-value server, enough of one for redis-cli and redis-benchmark: PING,
// ECHO, SET (with EX or PX), GET, DEL, EXISTS, INCR, EXPIRE, TTL and QUIT, on one dispatcher.
//
//   build/bin/resp_server PORT [ADDRESS]   (PORT 0: the kernel picks one; ADDRESS defaults to
//                                           127.0.0.1)
//
// Each connection is one coroutine: it reads what has arrived, runs every whole request in it
// (a pipeline), and writes all their replies with one send. A key's expiry is a sleepAsync timer
// on the dispatcher, and a key past its deadline also counts as gone before the timer fires, as
// in Redis. A malformed request gets Redis's "-ERR Protocol error: ..." and the connection is
// closed. SIGINT or SIGTERM stops the server: it closes its listener and connections and exits 0.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <signal.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <iostream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <asyncdispatch.hpp>

#include "resp_frame.hpp"

using namespace asyncdispatch;

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
      .count();
}

// Lets the table be searched with a string_view (the request's bytes) without making a string.
struct KeyHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

struct Entry {
  std::string value;
  std::int64_t expiresAt = 0; // ms on the steady clock; 0: the key does not expire
};

struct Server {
  AsyncFD listener{-1};
  std::unordered_set<AsyncFD> clients;
  std::unordered_map<std::string, Entry, KeyHash, std::equal_to<>> keys;
  bool stopping = false;
};

// The longest a single expiry timer sleeps: sleepAsync takes an int of milliseconds, so a longer
// TTL re-arms its timer until the deadline is near.
constexpr std::int64_t kMaxTimerMs = 24 * 3600 * 1000;

// Looks a key up, dropping it if its deadline has passed and its timer has not run yet.
Entry* lookup(Server& s, std::string_view key) {
  auto it = s.keys.find(key);
  if (it == s.keys.end()) return nullptr;
  if (it->second.expiresAt != 0 && it->second.expiresAt <= nowMs()) {
    s.keys.erase(it);
    return nullptr;
  }
  return &it->second;
}

// Arms the timer that removes key at expiresAt. A SET, DEL or EXPIRE since then changes or clears
// the deadline, and the timer then finds another deadline (or no key) and leaves it alone.
void armExpiry(Server& s, std::string key, std::int64_t expiresAt) {
  const std::int64_t wait = std::clamp<std::int64_t>(expiresAt - nowMs(), 0, kMaxTimerMs);
  sleepAsync(static_cast<int>(wait)).callback([&s, key = std::move(key), expiresAt]() mutable {
    auto it = s.keys.find(key);
    if (it == s.keys.end() || it->second.expiresAt != expiresAt) return;
    if (expiresAt <= nowMs()) {
      s.keys.erase(it);
    } else {
      armExpiry(s, std::move(key), expiresAt);
    }
  });
}

void setExpiry(Server& s, std::string_view key, Entry& e, std::int64_t expiresAt) {
  e.expiresAt = expiresAt;
  armExpiry(s, std::string(key), expiresAt);
}

// The replies, appended to the connection's output in RESP.
void replySimple(std::string& out, std::string_view s) {
  out += '+';
  out += s;
  out += "\r\n";
}
// An error's text goes on one line: a CR or LF from the request (an unknown command's name) would
// end it early and desynchronise the client, so they become spaces, as Redis does.
void replyError(std::string& out, std::string_view s) {
  out += '-';
  const std::size_t at = out.size();
  out += s;
  std::replace_if(
      out.begin() + static_cast<std::ptrdiff_t>(at), out.end(),
      [](char c) { return c == '\r' || c == '\n'; }, ' ');
  out += "\r\n";
}
void replyInteger(std::string& out, std::int64_t n) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, n).ptr;
  out += ':';
  out.append(digits, end);
  out += "\r\n";
}
void replyBulk(std::string& out, std::string_view s) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, s.size()).ptr;
  out += '$';
  out.append(digits, end);
  out += "\r\n";
  out += s;
  out += "\r\n";
}
void replyNull(std::string& out) {
  out += "$-1\r\n";
}

void replyArity(std::string& out, std::string_view lowerName) {
  std::string message = "ERR wrong number of arguments for '";
  message += lowerName;
  message += "' command";
  replyError(out, message);
}

constexpr std::string_view kNotInteger = "ERR value is not an integer or out of range";

bool equalsUpper(std::string_view arg, std::string_view upper) {
  if (arg.size() != upper.size()) return false;
  for (std::size_t i = 0; i < arg.size(); ++i) {
    const char c = arg[i] >= 'a' && arg[i] <= 'z' ? static_cast<char>(arg[i] - 32) : arg[i];
    if (c != upper[i]) return false;
  }
  return true;
}

// SET key value [EX seconds | PX milliseconds]
void commandSet(Server& s, const std::vector<std::string_view>& a, std::string& out) {
  std::int64_t expiresAt = 0;
  if (a.size() != 3) {
    if (a.size() != 5) return replyError(out, "ERR syntax error");
    const bool seconds = equalsUpper(a[3], "EX");
    if (!seconds && !equalsUpper(a[3], "PX")) return replyError(out, "ERR syntax error");
    std::int64_t ttl = 0;
    if (!resp::parseInteger(a[4], ttl)) return replyError(out, kNotInteger);
    // Redis's bounds: positive, and the deadline must fit in 64 bits of milliseconds.
    const std::int64_t now = nowMs();
    if (ttl <= 0 || (seconds && ttl > INT64_MAX / 1000) ||
        (seconds ? ttl * 1000 : ttl) > INT64_MAX - now)
      return replyError(out, "ERR invalid expire time in 'set' command");
    expiresAt = now + (seconds ? ttl * 1000 : ttl);
  }
  auto it = s.keys.find(a[1]);
  if (it == s.keys.end()) it = s.keys.emplace(std::string(a[1]), Entry{}).first;
  it->second.value.assign(a[2]);
  it->second.expiresAt = 0; // SET without EX or PX clears a TTL, as in Redis
  if (expiresAt != 0) setExpiry(s, a[1], it->second, expiresAt);
  replySimple(out, "OK");
}

void commandIncr(Server& s, std::string_view key, std::string& out) {
  Entry* e = lookup(s, key);
  std::int64_t n = 0;
  if (e != nullptr && !resp::parseInteger(e->value, n)) return replyError(out, kNotInteger);
  if (n == INT64_MAX) return replyError(out, "ERR increment or decrement would overflow");
  ++n;
  if (e == nullptr) e = &s.keys.emplace(std::string(key), Entry{}).first->second;
  char digits[24];
  e->value.assign(digits, std::to_chars(digits, digits + sizeof digits, n).ptr); // keeps its TTL
  replyInteger(out, n);
}

// EXPIRE key seconds: 1 if the key exists (a deadline not in the future deletes it at once, as in
// Redis), 0 if it does not.
void commandExpire(Server& s, const std::vector<std::string_view>& a, std::string& out) {
  std::int64_t seconds = 0;
  if (!resp::parseInteger(a[2], seconds)) return replyError(out, kNotInteger);
  if (a.size() > 3) {
    std::string message = "ERR Unsupported option ";
    message += a[3];
    return replyError(out, message);
  }
  const std::int64_t now = nowMs();
  if (seconds > INT64_MAX / 1000 || seconds < INT64_MIN / 1000 ||
      (seconds > 0 && seconds * 1000 > INT64_MAX - now))
    return replyError(out, "ERR invalid expire time in 'expire' command");
  Entry* e = lookup(s, a[1]);
  if (e == nullptr) return replyInteger(out, 0);
  if (seconds <= 0) {
    s.keys.erase(s.keys.find(a[1]));
  } else {
    setExpiry(s, a[1], *e, now + seconds * 1000);
  }
  replyInteger(out, 1);
}

// TTL key: the seconds left, rounded as Redis rounds them; -2 without the key, -1 without a TTL.
void commandTtl(Server& s, std::string_view key, std::string& out) {
  const Entry* e = lookup(s, key);
  if (e == nullptr) return replyInteger(out, -2);
  if (e->expiresAt == 0) return replyInteger(out, -1);
  replyInteger(out, (e->expiresAt - nowMs() + 500) / 1000);
}

void unknownCommand(const std::vector<std::string_view>& a, std::string& out) {
  // Redis's wording: the name and up to 128 bytes of the first arguments, each quoted.
  std::string message = "ERR unknown command '";
  message.append(a[0].substr(0, 128));
  message += "', with args beginning with: ";
  std::size_t room = 128;
  for (std::size_t i = 1; i < a.size() && room > 0; ++i) {
    const std::string_view arg = a[i].substr(0, room);
    room -= arg.size();
    message += '\'';
    message += arg;
    message += "' ";
  }
  replyError(out, message);
}

// Runs one request but QUIT, which the connection's loop answers itself.
void execute(Server& s, const std::vector<std::string_view>& a, std::string& out) {
  const std::string_view name = a[0];
  const std::size_t n = a.size();
  switch (name.size()) {
  case 3:
    if (equalsUpper(name, "GET")) {
      if (n != 2) return replyArity(out, "get");
      const Entry* e = lookup(s, a[1]);
      if (e == nullptr) return replyNull(out);
      return replyBulk(out, e->value);
    }
    if (equalsUpper(name, "SET")) {
      if (n < 3) return replyArity(out, "set");
      return commandSet(s, a, out);
    }
    if (equalsUpper(name, "DEL")) {
      if (n < 2) return replyArity(out, "del");
      std::int64_t removed = 0;
      for (std::size_t i = 1; i < n; ++i) {
        if (lookup(s, a[i]) == nullptr) continue;
        s.keys.erase(s.keys.find(a[i]));
        ++removed;
      }
      return replyInteger(out, removed);
    }
    if (equalsUpper(name, "TTL")) {
      if (n != 2) return replyArity(out, "ttl");
      return commandTtl(s, a[1], out);
    }
    break;
  case 4:
    if (equalsUpper(name, "PING")) {
      if (n > 2) return replyArity(out, "ping");
      if (n == 2) return replyBulk(out, a[1]);
      return replySimple(out, "PONG");
    }
    if (equalsUpper(name, "ECHO")) {
      if (n != 2) return replyArity(out, "echo");
      return replyBulk(out, a[1]);
    }
    if (equalsUpper(name, "INCR")) {
      if (n != 2) return replyArity(out, "incr");
      return commandIncr(s, a[1], out);
    }
    break;
  case 6:
    if (equalsUpper(name, "EXISTS")) {
      if (n < 2) return replyArity(out, "exists");
      std::int64_t found = 0;
      for (std::size_t i = 1; i < n; ++i)
        found += lookup(s, a[i]) != nullptr;
      return replyInteger(out, found);
    }
    if (equalsUpper(name, "EXPIRE")) {
      if (n < 3) return replyArity(out, "expire");
      return commandExpire(s, a, out);
    }
    break;
  }
  unknownCommand(a, out);
}

constexpr std::size_t kBufferSize = 16384;

// Serves one connection until the peer closes it, sends QUIT or a malformed request, or the
// server stops.
Future<void> serveClient(Server& s, AsyncFD client) {
  std::vector<char> in(kBufferSize);
  std::size_t used = 0;
  std::string out;
  resp::Parser parser;
  bool open = true;
  try {
    while (open) {
      // A request longer than the buffer grows it; the parser's limits bound how far.
      if (used == in.size()) in.resize(in.size() * 2);
      const int n = co_await recvInto(client, in.data() + used, static_cast<int>(in.size() - used));
      // The peer closed, or the data arrived in the pass that stopped the server: the stop closed
      // this connection before this coroutine could resume.
      if (n == 0 || s.stopping) break;
      used += static_cast<std::size_t>(n);
      std::size_t consumed = 0;
      while (open) {
        const auto status = parser.parse(in.data() + consumed, used - consumed);
        if (status == resp::Parser::Status::NeedMore) break;
        if (status == resp::Parser::Status::Error) {
          replyError(out, parser.error());
          open = false;
          break;
        }
        const auto& args = parser.args();
        if (!args.empty() && equalsUpper(args[0], "QUIT")) {
          replySimple(out, "OK");
          open = false; // after the replies so far and this one
        } else if (!args.empty()) {
          execute(s, args, out);
        }
        consumed += parser.frameLength();
      }
      // The unfinished request moves to the front; its parser counts from its start.
      std::memmove(in.data(), in.data() + consumed, used - consumed);
      used -= consumed;
      if (used == 0 && in.size() > kBufferSize)
        in = std::vector<char>(kBufferSize); // after a big one
      if (!out.empty()) {
        co_await send(client, out.data(), static_cast<int>(out.size()));
        out.clear();
        if (s.stopping) break;
      }
    }
  } catch (const OSError&) {
    // The server closed the connection to stop, or the peer reset it.
  }
  if (s.clients.erase(client) != 0) closeSocket(client);
}

Future<void> serve(Server& s) {
  while (!s.stopping) {
    AsyncFD client{-1};
    try {
      client = co_await accept(s.listener);
    } catch (const OSError&) {
      co_return; // the server closed the listener to stop
    }
    if (s.stopping) { // accepted in the pass that stopped the server, after the stop ran
      closeSocket(client);
      co_return;
    }
    setSockOptInt(client, IPPROTO_TCP, TCP_NODELAY, 1); // answer without Nagle's delay
    s.clients.insert(client);
    asyncCheck(serveClient(s, client));
  }
}

int usage() {
  std::cerr << "usage: resp_server PORT [ADDRESS]\n";
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) return usage();
  char* end = nullptr;
  const long port = std::strtol(argv[1], &end, 10);
  if (*end != '\0' || port < 0 || port > 65535) return usage();
  const std::string address = argc == 3 ? argv[2] : "127.0.0.1";

  Server s;
  try {
    s.listener = createAsyncNativeSocket();
    setSockOptInt(s.listener, SOL_SOCKET, SO_REUSEADDR, 1);
    bindAddr(s.listener, Port(port), address);
    listen(s.listener);
  } catch (const std::exception& e) {
    std::cerr << "resp_server: " << e.what() << "\n";
    return 1;
  }
  auto stop = [&s](AsyncFD) {
    s.stopping = true;
    return true;
  };
  addSignal(SIGINT, stop);
  addSignal(SIGTERM, stop);
  std::cout << "resp_server: listening on " << address << ":"
            << static_cast<int>(getLocalAddr(s.listener).second) << std::endl;
  asyncCheck(serve(s));
  while (!s.stopping)
    poll(-1);
  closeSocket(s.listener); // fails the pending accept: serve returns
  for (AsyncFD client : std::exchange(s.clients, {}))
    closeSocket(client);               // fails each pending recv or send: serveClient returns
  if (hasPendingOperations()) poll(0); // lets the coroutines see it and finish
  std::cout << "resp_server: stopped" << std::endl;
  return 0;
}
