// The portable half of the socket calls: what reads the same over POSIX sockets and Winsock (the
// OS's numbers for Domain, SockType and Protocol; the argument checks; the resolver; the
// nativesockets helpers bindAddr, listen, getLocalAddr, setSockOptInt; the Domain overload of
// createAsyncNativeSocket; recvLine over recv). What differs goes through the family's shim
// (sockets.hpp); each family's net.cpp has the operations themselves.
#include <cstring>
#include <string>

#include "family.hpp"
#include "loop.hpp"
#include "sockets.hpp"

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

void checkRegistered(const char* op, AsyncFD fd) {
  if (!Family::contains(currentDispatcher(), fd))
    throw ValueError(where(op, fd) + ": File descriptor not registered.");
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

void checkSendTo(AsyncFD fd, const void* data, int size, const sockaddr* saddr, socklen_t len) {
  checkRegistered("sendTo", fd);
  checkLength("sendTo", fd, size);
  checkNotNull("sendTo", fd, (data != nullptr || size == 0) && saddr != nullptr,
               "a buffer or address pointer");
  checkAddressLength("sendTo", fd, len);
}

std::string numericAddress(const sockaddr_storage& addr) {
  char text[INET6_ADDRSTRLEN] = "";
  if (addr.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(addr).sin_addr, text, sizeof text);
  } else if (addr.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(addr).sin6_addr, text, sizeof text);
  } else {
    return localPath(addr);
  }
  return text;
}

Port portOf(const sockaddr_storage& addr) {
  if (addr.ss_family == AF_INET)
    return Port(ntohs(reinterpret_cast<const sockaddr_in&>(addr).sin_port));
  if (addr.ss_family == AF_INET6)
    return Port(ntohs(reinterpret_cast<const sockaddr_in6&>(addr).sin6_port));
  return Port(0);
}

std::vector<AddrInfo> resolve(const char* op, const std::string& address, Port port,
                              const Domain* domain, SockType sockType, bool passive) {
  startSockets();
  addrinfo hints{};
  hints.ai_family = domain ? nativeDomain(*domain) : AF_UNSPEC;
  hints.ai_socktype = nativeSockType(sockType);
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  const std::string service = std::to_string(static_cast<unsigned>(port));
  addrinfo* list = nullptr;
  const int rc = ::getaddrinfo(address.c_str(), service.c_str(), &hints, &list);
  const std::string what = std::string(op) + "(" + address + ":" + service + ")";
  if (rc != 0) throw resolveError(rc, what);
  std::vector<AddrInfo> result;
  for (const addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    AddrInfo entry{ai->ai_family == AF_INET6 ? Domain::Inet6 : Domain::Inet,
                   {},
                   static_cast<socklen_t>(ai->ai_addrlen)};
    std::memcpy(&entry.addr, ai->ai_addr, ai->ai_addrlen);
    result.push_back(entry);
  }
  ::freeaddrinfo(list);
  if (result.empty()) throw IOError(what + ": Couldn't resolve address: " + address);
  return result;
}

} // namespace detail

namespace {

Future<AsyncFD> clientOf(Future<AcceptResult> accepted) {
  co_return (co_await accepted).client;
}

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

Future<AcceptResult> acceptAddr(AsyncFD socket, SocketFlags flags, bool inheritable) {
  return detail::accept("acceptAddr", socket, flags, inheritable);
}

Future<AsyncFD> accept(AsyncFD socket, SocketFlags flags, bool inheritable) {
  return clientOf(detail::accept("accept", socket, flags, inheritable));
}

Future<std::string> recvLine(AsyncFD socket) {
  detail::checkRegistered("recvLine", socket);
  return readLine(socket);
}

void bindAddr(AsyncFD socket, Port port, const std::string& address, Domain domain) {
  detail::checkRegistered("bindAddr", socket);
  std::string host = address;
  if (host.empty()) host = domain == Domain::Inet6 ? "::" : "0.0.0.0";
  const std::vector<detail::AddrInfo> addrs =
      detail::resolve("bindAddr", host, port, &domain, SockType::Stream, true);
  const detail::AddrInfo& ai = addrs.front();
  if (::bind(detail::handle(socket), reinterpret_cast<const sockaddr*>(&ai.addr), ai.addrLen) != 0)
    throw OSError(detail::lastSocketError(), detail::where("bindAddr", socket));
}

void listen(AsyncFD socket, int backlog) {
  detail::checkRegistered("listen", socket);
  if (::listen(detail::handle(socket), backlog) != 0)
    throw OSError(detail::lastSocketError(), detail::where("listen", socket));
}

std::pair<std::string, Port> getLocalAddr(AsyncFD socket) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(detail::handle(socket), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw OSError(detail::lastSocketError(), detail::where("getLocalAddr", socket));
  return {detail::numericAddress(addr), detail::portOf(addr)};
}

void setSockOptInt(AsyncFD socket, int level, int optname, int value) {
  if (::setsockopt(detail::handle(socket), level, optname, reinterpret_cast<const char*>(&value),
                   sizeof value) != 0)
    throw OSError(detail::lastSocketError(), detail::where("setSockOptInt", socket));
}

} // namespace asyncdispatch
