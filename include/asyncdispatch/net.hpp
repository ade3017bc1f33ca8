// Sockets over the dispatcher: Nim's asyncdispatch socket procs (createAsyncNativeSocket, connect,
// dial, accept, recv, send ...) and the few nativesockets helpers a server needs (bindAddr,
// listen, getLocalAddr, setSockOptInt). Every operation checks its descriptor synchronously:
// misuse throws at the call, never as a failed future.
#pragma once

#if defined(_WIN32)
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

#include <string>
#include <utility>
#include <vector>

#include "future.hpp"
#include "types.hpp"

namespace asyncdispatch {

/// The tuple of Nim's acceptAddr: the peer's numeric address ("127.0.0.1", "::1") and the new
/// socket, already non-blocking, close-on-exec unless asked otherwise, and registered.
struct AcceptResult {
  std::string address; ///< the peer's numeric address
  AsyncFD client;      ///< the accepted socket
};

/// Nim's createAsyncNativeSocket: a non-blocking socket, registered with the dispatcher. Throws
/// OSError if the OS refuses (Nim returns an invalid descriptor instead).
AsyncFD createAsyncNativeSocket(Domain domain = Domain::Inet, SockType sockType = SockType::Stream,
                                Protocol protocol = Protocol::TCP, bool inheritable = false);
/// Nim's createAsyncNativeSocket of cints: the OS's own AF_*, SOCK_* and IPPROTO_* numbers.
AsyncFD createAsyncNativeSocket(int domain, int sockType, int protocol, bool inheritable = false);

/// Nim's connect: resolves address (synchronously; a name that does not resolve throws here) and
/// tries each address in turn; fails with the last error (refused: OSError with ECONNREFUSED).
Future<void> connect(AsyncFD socket, const std::string& address, Port port,
                     Domain domain = Domain::Inet);
/// Nim's dial: resolves address for IPv4 and IPv6 and connects to each address in turn with a
/// new socket; completes with the connected, registered socket.
Future<AsyncFD> dial(const std::string& address, Port port, Protocol protocol = Protocol::TCP);

/// Nim's acceptAddr: the next connection on a listening socket, and its peer's address. With
/// SafeDisconn a connection reset before it was accepted is skipped and the accept keeps waiting.
Future<AcceptResult> acceptAddr(AsyncFD socket, SocketFlags flags = SocketFlag::SafeDisconn,
                                bool inheritable = false);
/// Nim's accept: acceptAddr without the address.
Future<AsyncFD> accept(AsyncFD socket, SocketFlags flags = SocketFlag::SafeDisconn,
                       bool inheritable = false);

/// Nim's recv: up to size bytes, `""` once the peer has closed (or reset, with SafeDisconn).
Future<std::string> recv(AsyncFD socket, int size, SocketFlags flags = SocketFlag::SafeDisconn);
/// Nim's recvInto: up to size bytes into buf, which must outlive the future; 0 at end of stream.
Future<int> recvInto(AsyncFD socket, void* buf, int size,
                     SocketFlags flags = SocketFlag::SafeDisconn);
/// Nim's recvFromInto: one datagram into data (size bytes at most; the rest of a longer one is
/// lost, as recvfrom does), its sender into saddr/saddrLen; all three must outlive the future.
/// Completes with the datagram's length: 0 is an empty datagram, not the end of a stream.
Future<int> recvFromInto(AsyncFD socket, void* data, int size, sockaddr* saddr, socklen_t* saddrLen,
                         SocketFlags flags = SocketFlag::SafeDisconn);
/// Nim's sendTo: one datagram of size bytes (0 sends an empty one) to saddr, which is copied at
/// the call; data must outlive the future.
Future<void> sendTo(AsyncFD socket, const void* data, int size, const sockaddr* saddr,
                    socklen_t saddrLen, SocketFlags flags = SocketFlag::SafeDisconn);
/// Nim's send: completes once every byte is written; buf must outlive the future. With
/// SafeDisconn a peer that went away ends the send quietly, as in Nim. Never raises SIGPIPE.
Future<void> send(AsyncFD socket, const void* buf, int size,
                  SocketFlags flags = SocketFlag::SafeDisconn);
/// Nim's send of a string, which the operation owns (no need to keep it alive).
Future<void> send(AsyncFD socket, std::string data, SocketFlags flags = SocketFlag::SafeDisconn);
/// Nim's old asyncdispatch recvLine: a line without its terminator, `"\r\n"` for an empty line,
/// `""` when the peer closed.
Future<std::string> recvLine(AsyncFD socket);

/// Nim's nativesockets bindAddr: binds to address (`""` is every interface) and port (0: any).
void bindAddr(AsyncFD socket, Port port, const std::string& address = "",
              Domain domain = Domain::Inet);
/// Nim's nativesockets listen.
void listen(AsyncFD socket, int backlog = SOMAXCONN);
/// Nim's nativesockets getLocalAddr: the numeric address and port the socket is bound to.
std::pair<std::string, Port> getLocalAddr(AsyncFD socket);
/// Nim's nativesockets setSockOptInt: `setSockOptInt(fd, SOL_SOCKET, SO_REUSEADDR, 1)`.
void setSockOptInt(AsyncFD socket, int level, int optname, int value);

} // namespace asyncdispatch
