// UDP over the dispatcher on real loopback sockets: recvFromInto and sendTo, IPv4 and IPv6,
// datagram boundaries, empty datagrams, and the misuse and close rules they share with TCP.
#if !defined(_WIN32)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

#include <cerrno>
#include <cstring>
#include <string>

#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

namespace {

// A registered UDP socket bound to the loopback address of `domain`, and that address.
struct Bound {
  AsyncFD fd;
  sockaddr_storage addr;
  socklen_t len;
};

Bound bindUdp(Domain domain = Domain::Inet) {
  const AsyncFD fd = createAsyncNativeSocket(domain, SockType::Dgram, Protocol::UDP);
  bindAddr(fd, Port(0), domain == Domain::Inet6 ? "::1" : "127.0.0.1", domain);
  Bound b{fd, {}, sizeof(sockaddr_storage)};
  REQUIRE(::getsockname(static_cast<SocketHandle>(fd), reinterpret_cast<sockaddr*>(&b.addr),
                        &b.len) == 0);
  return b;
}

const sockaddr* addressOf(const Bound& b) {
  return reinterpret_cast<const sockaddr*>(&b.addr);
}

// Where one recvFromInto puts a datagram and its sender; it must outlive the receive.
struct Inbox {
  char buf[64];
  sockaddr_storage from{};
  socklen_t fromLen = sizeof(sockaddr_storage);

  Future<int> receive(AsyncFD fd) {
    fromLen = sizeof from;
    return recvFromInto(fd, buf, sizeof buf, reinterpret_cast<sockaddr*>(&from), &fromLen);
  }
  std::string text(int n) const { return std::string(buf, static_cast<std::size_t>(n)); }
};

} // namespace

TEST_CASE("recvFromInto: receives a datagram and who sent it") {
  Bound receiver = bindUdp();
  Bound sender = bindUdp();
  Inbox inbox;
  Future<int> received = inbox.receive(receiver.fd);
  CHECK_FALSE(received.finished());
  waitWithin(sendTo(sender.fd, "hello", 5, addressOf(receiver), receiver.len));
  CHECK(waitWithin(received) == 5);
  CHECK(inbox.text(5) == "hello");
  REQUIRE(inbox.fromLen == sender.len);
  CHECK(std::memcmp(&inbox.from, &sender.addr, inbox.fromLen) == 0);
  closeSocket(receiver.fd);
  closeSocket(sender.fd);
  checkDispatcherEmpty();
}

TEST_CASE("sendTo: datagrams keep their boundaries and their order") {
  Bound receiver = bindUdp();
  Bound sender = bindUdp();
  for (const char* message : {"one", "two!", "three"})
    waitWithin(sendTo(sender.fd, message, static_cast<int>(std::strlen(message)),
                      addressOf(receiver), receiver.len));
  Inbox inbox;
  for (const char* expected : {"one", "two!", "three"})
    CHECK(inbox.text(waitWithin(inbox.receive(receiver.fd))) == expected);
  closeSocket(receiver.fd);
  closeSocket(sender.fd);
  checkDispatcherEmpty();
}

TEST_CASE("recvFromInto: a zero-length datagram is data, not the end of a stream") {
  Bound receiver = bindUdp();
  Bound sender = bindUdp();
  waitWithin(sendTo(sender.fd, nullptr, 0, addressOf(receiver), receiver.len));
  waitWithin(sendTo(sender.fd, "after", 5, addressOf(receiver), receiver.len));
  Inbox inbox;
  CHECK(waitWithin(inbox.receive(receiver.fd)) == 0);
  CHECK(waitWithin(inbox.receive(receiver.fd)) == 5);
  CHECK(inbox.text(5) == "after"); // the socket still delivers after the empty one
  closeSocket(receiver.fd);
  closeSocket(sender.fd);
  checkDispatcherEmpty();
}

TEST_CASE("sendTo: works over IPv6") {
  if (!hasIPv6Loopback()) {
    MESSAGE("no IPv6 loopback on this machine: skipped");
    checkDispatcherEmpty();
    return;
  }
  Bound receiver = bindUdp(Domain::Inet6);
  Bound sender = bindUdp(Domain::Inet6);
  Inbox inbox;
  Future<int> received = inbox.receive(receiver.fd);
  waitWithin(sendTo(sender.fd, "v6", 2, addressOf(receiver), receiver.len));
  CHECK(waitWithin(received) == 2);
  CHECK(inbox.from.ss_family == AF_INET6);
  closeSocket(receiver.fd);
  closeSocket(sender.fd);
  checkDispatcherEmpty();
}

TEST_CASE("sendTo: the destination is copied at the call") {
  Bound receiver = bindUdp();
  Bound sender = bindUdp();
  Future<void> sent;
  {
    sockaddr_storage scratch = receiver.addr;
    sent =
        sendTo(sender.fd, "copied", 6, reinterpret_cast<const sockaddr*>(&scratch), receiver.len);
    std::memset(&scratch, 0, sizeof scratch); // what the caller does with it afterwards
  }
  waitWithin(sent);
  Inbox inbox;
  CHECK(waitWithin(inbox.receive(receiver.fd)) == 6);
  closeSocket(receiver.fd);
  closeSocket(sender.fd);
  checkDispatcherEmpty();
}

TEST_CASE("recvFromInto: misuse throws ValueError at the call") {
  Bound b = bindUdp();
  char buf[8];
  sockaddr_storage from{};
  socklen_t fromLen = sizeof from;
  auto* fromAddr = reinterpret_cast<sockaddr*>(&from);
  CHECK_THROWS_AS(recvFromInto(AsyncFD(987), buf, sizeof buf, fromAddr, &fromLen), ValueError);
  CHECK_THROWS_AS(recvFromInto(b.fd, buf, 0, fromAddr, &fromLen), ValueError);
  CHECK_THROWS_AS(recvFromInto(b.fd, buf, sizeof buf, nullptr, &fromLen), ValueError);
  CHECK_THROWS_AS(sendTo(AsyncFD(987), "x", 1, addressOf(b), b.len), ValueError);
  CHECK_THROWS_AS(sendTo(b.fd, "x", 1, addressOf(b), 0), ValueError);
  closeSocket(b.fd);
  checkDispatcherEmpty();
}

TEST_CASE("recvFromInto: closeSocket fails a pending receive once with EBADF (Windows: "
          "ERROR_OPERATION_ABORTED)") {
  Bound b = bindUdp();
  Inbox inbox;
  Future<int> received = inbox.receive(b.fd);
  closeSocket(b.fd);
  REQUIRE(received.failed());
  const OSError e = osErrorOf(received);
#if defined(_WIN32)
  CHECK(e.code().value() == ERROR_OPERATION_ABORTED);
#else
  CHECK(e.code() == std::errc::bad_file_descriptor);
#endif
  CHECK(std::string(e.what()).find("recvFromInto") != std::string::npos);
  CHECK(std::string(e.what()).find("closed") != std::string::npos);
  runDry();
  checkDispatcherEmpty();
}

namespace {

// The echo side: sends every datagram back to whoever sent it, until it has echoed `count`.
Future<void> udpEcho(AsyncFD fd, int count) {
  std::string buf(2048, '\0');
  for (int i = 0; i < count; ++i) {
    sockaddr_storage from{};
    socklen_t fromLen = sizeof from;
    const int n = co_await recvFromInto(fd, buf.data(), static_cast<int>(buf.size()),
                                        reinterpret_cast<sockaddr*>(&from), &fromLen);
    co_await sendTo(fd, buf.data(), n, reinterpret_cast<const sockaddr*>(&from), fromLen);
  }
}

// The client side: datagrams of sizes 0 to 1400 bytes, each with its own contents, each waited
// for before the next is sent (loopback drops datagrams when a receive buffer overflows, and
// this test is about the dispatcher, not about flow control).
Future<int> udpClient(AsyncFD fd, const Bound& server, int count) {
  std::string out;
  std::string in(2048, '\0');
  int matched = 0;
  for (int i = 0; i < count; ++i) {
    out.assign(static_cast<std::size_t>((i * 37) % 1401), '\0');
    for (std::size_t k = 0; k < out.size(); ++k)
      out[k] = static_cast<char>('a' + (i + k) % 26);
    co_await sendTo(fd, out.data(), static_cast<int>(out.size()), addressOf(server), server.len);
    sockaddr_storage from{};
    socklen_t fromLen = sizeof from;
    const int n = co_await recvFromInto(fd, in.data(), static_cast<int>(in.size()),
                                        reinterpret_cast<sockaddr*>(&from), &fromLen);
    if (n == static_cast<int>(out.size()) && in.compare(0, out.size(), out) == 0) ++matched;
  }
  co_return matched;
}

} // namespace

TEST_CASE("sendTo: a UDP echo of 10,000 datagrams of mixed sizes returns every byte") {
  constexpr int kDatagrams = 10'000;
  Bound server = bindUdp();
  Bound client = bindUdp();
  Future<void> echoed = udpEcho(server.fd, kDatagrams);
  Future<int> matched = udpClient(client.fd, server, kDatagrams);
  CHECK(waitWithin(matched, 20'000) == kDatagrams);
  waitWithin(echoed);
  closeSocket(server.fd);
  closeSocket(client.fd);
  checkDispatcherEmpty();
}
