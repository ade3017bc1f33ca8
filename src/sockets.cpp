// The portable half of the socket calls: what reads the same over POSIX sockets and Winsock
// (the OS's numbers for Domain, SockType and Protocol; the Domain overload of
// createAsyncNativeSocket; recvLine over recv). Each backend's net.cpp has the rest.
#include <string>

#include "../include/asyncdispatch/net.hpp"
#include "loop.hpp"

namespace asyncdispatch {

namespace detail {

int nativeDomain(Domain d) {
  switch (d) {
  case Domain::Unix:
    return AF_UNIX;
  case Domain::Inet:
    return AF_INET;
  case Domain::Inet6:
    return AF_INET6;
  }
  return AF_UNSPEC;
}

int nativeSockType(SockType t) {
  switch (t) {
  case SockType::Stream:
    return SOCK_STREAM;
  case SockType::Dgram:
    return SOCK_DGRAM;
  case SockType::Raw:
    return SOCK_RAW;
  case SockType::SeqPacket:
    return SOCK_SEQPACKET;
  }
  return 0;
}

int nativeProtocol(Protocol p) {
  switch (p) {
  case Protocol::TCP:
    return IPPROTO_TCP;
  case Protocol::UDP:
    return IPPROTO_UDP;
  case Protocol::IP:
    return IPPROTO_IP;
  case Protocol::IPv6:
    return IPPROTO_IPV6;
  case Protocol::Raw:
    return IPPROTO_RAW;
  case Protocol::ICMP:
    return IPPROTO_ICMP;
  case Protocol::ICMPv6:
    return IPPROTO_ICMPV6;
  }
  return 0;
}

void checkSize(const char* op, AsyncFD fd, int size) {
  if (size <= 0)
    throw ValueError(where(op, fd) + ": size must be positive, got " + std::to_string(size));
}

void checkLength(const char* op, AsyncFD fd, int size) {
  if (size < 0) throw ValueError(where(op, fd) + ": size must not be negative");
}

void checkNotNull(const char* op, AsyncFD fd, bool present, const char* what) {
  if (!present) throw ValueError(where(op, fd) + ": " + what + " is null");
}

void checkAddressLength(const char* op, AsyncFD fd, socklen_t len) {
  if (len <= 0 || len > static_cast<socklen_t>(sizeof(sockaddr_storage)))
    throw ValueError(where(op, fd) + ": address length out of range");
}

} // namespace detail

namespace {

// Nim's recvLine loop: one byte at a time until "\r\n" or "\n".
Future<std::string> readLine(AsyncFD socket) {
  std::string line;
  for (;;) {
    std::string c = co_await recv(socket, 1);
    if (c.empty()) co_return std::string();
    if (c == "\r") {
      c = co_await recv(socket, 1);
      if (c.empty()) co_return std::string();
      if (c == "\n") break;
      line += '\r'; // a lone CR is data (Nim asserts instead)
    }
    if (c == "\n") break;
    line += c;
  }
  co_return line.empty() ? std::string("\r\n") : line;
}

} // namespace

AsyncFD createAsyncNativeSocket(Domain domain, SockType sockType, Protocol protocol,
                                bool inheritable) {
  return createAsyncNativeSocket(detail::nativeDomain(domain), detail::nativeSockType(sockType),
                                 detail::nativeProtocol(protocol), inheritable);
}

Future<std::string> recvLine(AsyncFD socket) {
  if (!contains(getGlobalDispatcher(), socket))
    throw ValueError(detail::where("recvLine", socket) + ": File descriptor not registered.");
  return readLine(socket);
}

} // namespace asyncdispatch
