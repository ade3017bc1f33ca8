// What the socket calls of both families share, and the small shim each family gives them for
// what differs between POSIX sockets and Winsock (the last error, starting the library, a
// resolver failure, a local socket's path). Internal: users include net.hpp.
#pragma once

#include <string>
#include <vector>

#include "../include/asyncdispatch/net.hpp"

namespace asyncdispatch::detail {

// One address from the resolver, ready for connect().
struct AddrInfo {
  Domain domain;
  sockaddr_storage addr;
  socklen_t addrLen;
};

// Resolves address:port for connect/dial/bindAddr (`op` names the caller in errors). `domain`
// restricts the family; nullptr means IPv4 and IPv6. Throws OSError if the name does not
// resolve, IOError if it resolves to no family we can use.
std::vector<AddrInfo> resolve(const char* op, const std::string& address, Port port,
                              const Domain* domain, SockType sockType, bool passive = false);
// acceptAddr and accept (op names which): the family's accept operation (platform/*/net.cpp).
Future<AcceptResult> accept(const char* op, AsyncFD socket, SocketFlags flags, bool inheritable);
// connect's and dial's one attempt at one address: the family's (src/poll.cpp).
Future<void> connectAddress(AsyncFD socket, const AddrInfo& target);

// The numeric form of an address ("127.0.0.1", "::1", a local socket's path), and its port.
std::string numericAddress(const sockaddr_storage& addr);
Port portOf(const sockaddr_storage& addr);

// The OS's numbers for a Domain, SockType, Protocol: the same names on POSIX and Winsock.
int nativeDomain(Domain d);
int nativeSockType(SockType t);
int nativeProtocol(Protocol p);

// The argument checks every family makes at the call, so that misuse throws the same ValueError
// everywhere, naming the operation and the descriptor.
void checkRegistered(const char* op, AsyncFD fd);       // "File descriptor not registered."
void checkSize(const char* op, AsyncFD fd, int size);   // size > 0
void checkLength(const char* op, AsyncFD fd, int size); // size >= 0
void checkNotNull(const char* op, AsyncFD fd, bool present, const char* what);
void checkAddressLength(const char* op, AsyncFD fd, socklen_t len);
// All of sendTo's: registered, a length >= 0, a buffer (unless empty) and an address of a sane
// size.
void checkSendTo(AsyncFD fd, const void* data, int size, const sockaddr* saddr, socklen_t len);

// The shim, one definition per family (platform/*/net.cpp):
// the error of the socket call that just failed (errno, WSAGetLastError());
int lastSocketError() noexcept;
// makes the socket library usable (WSAStartup once; nothing on POSIX);
void startSockets();
// the OSError of a getaddrinfo that returned rc (its codes are not errno's on POSIX);
OSError resolveError(int rc, const std::string& what);
// the path of a local (AF_UNIX) socket address, "" where there are none.
std::string localPath(const sockaddr_storage& addr);

} // namespace asyncdispatch::detail
