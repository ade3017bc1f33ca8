// Nim's connect and dial: resolve, then try each address in turn. Written once for every backend;
// the one attempt at one address (detail::connectAddress) is the platform's.
#include <exception>

#include "../include/asyncdispatch/net.hpp"
#include "loop.hpp"
#include "sockets.hpp"

namespace asyncdispatch {

namespace {

Future<void> connectToAny(AsyncFD socket, std::vector<detail::AddrInfo> addrs) {
  std::exception_ptr last;
  for (const detail::AddrInfo& target : addrs) {
    // A socket closed or unregistered while an attempt was pending cannot try the next one.
    if (last && !contains(getGlobalDispatcher(), socket)) break;
    try {
      co_await detail::connectAddress(socket, target);
      co_return;
    } catch (const CancelledError&) {
      throw; // a cancelled connect tries no further address
    } catch (...) {
      last = std::current_exception();
    }
  }
  std::rethrow_exception(last);
}

Future<AsyncFD> dialAny(std::vector<detail::AddrInfo> addrs, SockType sockType, Protocol protocol) {
  std::exception_ptr last;
  for (const detail::AddrInfo& target : addrs) {
    // A fresh socket per attempt: a socket whose connect failed is not reused.
    const AsyncFD fd = createAsyncNativeSocket(target.domain, sockType, protocol);
    try {
      co_await detail::connectAddress(fd, target);
      co_return fd;
    } catch (const CancelledError&) {
      closeSocket(fd); // a cancelled dial tries no further address and leaves no socket behind
      throw;
    } catch (...) {
      last = std::current_exception();
    }
    closeSocket(fd);
  }
  std::rethrow_exception(last);
}

} // namespace

Future<void> connect(AsyncFD socket, const std::string& address, Port port, Domain domain) {
  detail::checkRegistered("connect", socket);
  return connectToAny(socket, detail::resolve("connect", address, port, &domain, SockType::Stream));
}

Future<AsyncFD> dial(const std::string& address, Port port, Protocol protocol) {
  const SockType sockType = protocol == Protocol::UDP ? SockType::Dgram : SockType::Stream;
  return dialAny(detail::resolve("dial", address, port, nullptr, sockType), sockType, protocol);
}

} // namespace asyncdispatch
