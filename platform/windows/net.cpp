// The socket operations of the IOCP backend. Not yet on Windows (issue 5): each throws
// OSError(ERROR_CALL_NOT_IMPLEMENTED) naming itself, synchronously, until the overlapped versions
// (AcceptEx, ConnectEx, WSARecv, WSASend, WSARecvFrom, WSASendTo) replace them, in the order of
// platform/posix/net.cpp.
#include "../../include/asyncdispatch/net.hpp"

#include "../../src/loop.hpp"

namespace asyncdispatch {

namespace {

using detail::where;

[[noreturn]] void notYet(const std::string& op) {
  throw OSError(ERROR_CALL_NOT_IMPLEMENTED, op, "not yet on Windows");
}

} // namespace

AsyncFD createAsyncNativeSocket(int, int, int, bool) {
  notYet("createAsyncNativeSocket");
}

AsyncFD createAsyncNativeSocket(Domain, SockType, Protocol, bool) {
  notYet("createAsyncNativeSocket");
}

Future<AcceptResult> acceptAddr(AsyncFD socket, SocketFlags, bool) {
  notYet(where("acceptAddr", socket));
}

Future<AsyncFD> accept(AsyncFD socket, SocketFlags, bool) {
  notYet(where("accept", socket));
}

Future<std::string> recv(AsyncFD socket, int, SocketFlags) {
  notYet(where("recv", socket));
}

Future<int> recvInto(AsyncFD socket, void*, int, SocketFlags) {
  notYet(where("recvInto", socket));
}

Future<int> recvFromInto(AsyncFD socket, void*, int, sockaddr*, socklen_t*, SocketFlags) {
  notYet(where("recvFromInto", socket));
}

Future<void> sendTo(AsyncFD socket, const void*, int, const sockaddr*, socklen_t, SocketFlags) {
  notYet(where("sendTo", socket));
}

Future<void> send(AsyncFD socket, const void*, int, SocketFlags) {
  notYet(where("send", socket));
}

Future<void> send(AsyncFD socket, std::string, SocketFlags) {
  notYet(where("send", socket));
}

Future<std::string> recvLine(AsyncFD socket) {
  notYet(where("recvLine", socket));
}

void bindAddr(AsyncFD socket, Port, const std::string&, Domain) {
  notYet(where("bindAddr", socket));
}

void listen(AsyncFD socket, int) {
  notYet(where("listen", socket));
}

std::pair<std::string, Port> getLocalAddr(AsyncFD socket) {
  notYet(where("getLocalAddr", socket));
}

void setSockOptInt(AsyncFD socket, int, int, int) {
  notYet(where("setSockOptInt", socket));
}

namespace detail {

std::vector<AddrInfo> resolve(const char* op, const std::string&, Port, const Domain*, SockType,
                              bool) {
  notYet(op);
}

Future<void> connectAddress(AsyncFD socket, const AddrInfo&) {
  notYet(where("connect", socket));
}

} // namespace detail

} // namespace asyncdispatch
