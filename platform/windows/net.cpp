// The socket operations of the IOCP backend (Nim's Windows half of asyncdispatch), in the order of
// platform/posix/net.cpp. Each operation starts one overlapped call (AcceptEx, ConnectEx, WSARecv,
// WSASend, WSARecvFrom, WSASendTo) whose completion poll dequeues from ioPort and hands to the
// CompletionData.cb made here.
//
// The ownership rule, and why:
//  1. Every byte the kernel may touch belongs to the operation: its CustomOverlapped carries, in
//     its callback, the buffer, the address and the accepted socket, and the port owns the
//     CustomOverlapped until the completion is dequeued (dispatcher.hpp, 1). So recvInto,
//     recvFromInto and send(buf) copy between the caller's memory and the operation's: a future
//     that closeSocket or cancel fails at once leaves nothing of the caller's in the kernel's
//     hands.
//  2. An operation always waits for its completion packet, even when the call succeeds at once
//     (FILE_SKIP_COMPLETION_PORT_ON_SUCCESS is not set). The packet is the one place where an
//     operation finishes, so it finishes exactly once and its OVERLAPPED is freed exactly once; the
//     price is one pass of latency for a call that could have finished at once, which also keeps a
//     connection that always has data from starving the others. Nim completes some operations at
//     once and ignores the packet that follows.
//  3. A call that fails at once queues no packet: the OVERLAPPED comes back to us and the future
//     fails (or, for a disconnection with SafeDisconn, completes) at the call.
//  4. Each operation in flight is listed in Dispatcher::operations under its descriptor, so that
//     closeSocket, unregister and cancel can fail its future at once. Its completion then finds
//     itself unlisted (claim) and does nothing but let the port's OVERLAPPED go.
#include "../../include/asyncdispatch/net.hpp"

#include <mswsock.h>
#include <ws2tcpip.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "../../src/family.hpp"
#include "../../src/loop.hpp"
#include "../../src/sockets.hpp"

namespace asyncdispatch {

namespace {

using detail::checkRegistered;
using detail::handle;
using detail::where;

// Nim's wsaStartup in asyncdispatch's initialisation: once per process. Never undone with
// WSACleanup: sockets may outlive every static (thread-local dispatchers, user objects), and the
// process's exit releases Winsock.
void startWinsock() {
  static const int started = [] {
    WSADATA data;
    const int rc = WSAStartup(MAKEWORD(2, 2), &data);
    if (rc != 0) throw OSError(rc, "WSAStartup");
    return 0;
  }();
  (void)started;
}

// A socket that is closed unless released: the client AcceptEx is given before it completes, and
// a new socket until it is registered.
class OwnedSocket {
public:
  OwnedSocket() = default;
  explicit OwnedSocket(SOCKET s) noexcept : s_(s) {}
  OwnedSocket(OwnedSocket&& other) noexcept : s_(std::exchange(other.s_, INVALID_SOCKET)) {}
  OwnedSocket& operator=(OwnedSocket&&) = delete;
  ~OwnedSocket() {
    if (s_ != INVALID_SOCKET) closesocket(s_);
  }
  SOCKET get() const noexcept { return s_; }
  SOCKET release() noexcept { return std::exchange(s_, INVALID_SOCKET); }
  void reset(SOCKET s) noexcept {
    if (s_ != INVALID_SOCKET) closesocket(s_);
    s_ = s;
  }

private:
  SOCKET s_ = INVALID_SOCKET;
};

// Nim's loadWinsockExtensions: AcceptEx, ConnectEx and GetAcceptExSockaddrs are reached through
// WSAIoctl (ConnectEx is exported by no DLL), once per process with a socket made for the purpose.
struct Extensions {
  LPFN_ACCEPTEX acceptEx = nullptr;
  LPFN_CONNECTEX connectEx = nullptr;
  LPFN_GETACCEPTEXSOCKADDRS getAcceptExSockaddrs = nullptr;
};

template <class Fn>
void loadExtension(SOCKET s, GUID guid, Fn& fn) {
  DWORD bytes = 0;
  if (WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof guid, &fn, sizeof fn, &bytes,
               nullptr, nullptr) != 0)
    throw OSError(WSAGetLastError(), "WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER)");
}

const Extensions& extensions() {
  static const Extensions ext = [] {
    startWinsock();
    const OwnedSocket s(WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0,
                                   WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT));
    if (s.get() == INVALID_SOCKET) throw OSError(WSAGetLastError(), "loadWinsockExtensions");
    Extensions e;
    loadExtension(s.get(), WSAID_ACCEPTEX, e.acceptEx);
    loadExtension(s.get(), WSAID_CONNECTEX, e.connectEx);
    loadExtension(s.get(), WSAID_GETACCEPTEXSOCKADDRS, e.getAcceptExSockaddrs);
    return e;
  }();
  return ext;
}

// Nim's isDisconnectionError for Windows: these six, and only with SafeDisconn. A completion
// reports the Win32 error of its NTSTATUS (ERROR_NETNAME_DELETED for a reset), a call that fails
// at once the WSA error, so both kinds are in the set.
bool isDisconnect(SocketFlags flags, DWORD err) {
  return flags.contains(SocketFlag::SafeDisconn) &&
         (err == WSAECONNRESET || err == WSAECONNABORTED || err == WSAENETRESET ||
          err == WSAEDISCON || err == WSAESHUTDOWN || err == ERROR_NETNAME_DELETED);
}

// Nim's recv on Windows asserts "Peek not supported on Windows.": an overlapped MSG_PEEK would
// complete with data that is still there, and the next recv would return it again. Thrown at the
// call, as misuse.
void rejectPeek(const char* op, AsyncFD fd, SocketFlags flags) {
  if (flags.contains(SocketFlag::Peek))
    throw ValueError(where(op, fd) + ": Peek not supported on Windows.");
}

// The result of an overlapped call: 0 when a completion packet will come (it succeeded at once or
// is pending), else the error it failed with at once. The WSA calls return 0 for success
// (wsaResult), the Microsoft extensions TRUE (extensionResult).
DWORD pendingOr(DWORD err) {
  return err == WSA_IO_PENDING ? 0 : err;
}
DWORD wsaResult(int rc) {
  return rc == 0 ? 0 : pendingOr(static_cast<DWORD>(WSAGetLastError()));
}
DWORD extensionResult(BOOL ok) {
  return ok ? 0 : pendingOr(static_cast<DWORD>(WSAGetLastError()));
}

// A completion that finds its operation still listed takes it off the list and runs; one that
// does not was abandoned (closeSocket, unregister, cancel failed its future already): it only
// lets its OVERLAPPED go (rule 4 above).
bool claim(Dispatcher& p, AsyncFD fd, const CustomOverlapped* ov) {
  const auto it = p.operations.find(fd);
  if (it != p.operations.end()) {
    std::vector<Dispatcher::InFlight>& list = it->second;
    const auto op = std::find_if(list.begin(), list.end(),
                                 [ov](const Dispatcher::InFlight& o) { return o.ov == ov; });
    if (op != list.end()) {
      list.erase(op);
      if (list.empty()) p.operations.erase(it);
      return true;
    }
  }
  --p.abandonedOperations;
  return false;
}

// Starts one overlapped call for the operation `op` on fd, whose future is fut: issue(ov) makes
// the call. When a packet will come, the CustomOverlapped, with `done` moved into it, goes to the
// port, and `done` runs when it is dequeued (unless the operation was abandoned meanwhile);
// returns 0. Otherwise the CustomOverlapped is freed here, `done` (and the state it owns) is left
// to the caller, and the error is returned for the caller to report (rule 3 above).
template <class Issue>
DWORD submit(const char* op, AsyncFD fd, const FutureBase& fut, CompletionCallback& done,
             Issue issue) {
  Dispatcher& p = detail::currentDispatcher();
  auto ov = std::make_unique<CustomOverlapped>(); // value-initialised: the OVERLAPPED is zeroed
  CustomOverlapped* raw = ov.get();
  ov->data.fd = fd;
  // Everything that can throw happens before the call: once it is in flight, the port owns it.
  // So the callback is made now around an empty slot, which takes `done` once the call is made.
  auto slot = std::make_unique<CompletionCallback>();
  CompletionCallback& target = *slot;
  ov->data.cb = [raw, slot = std::move(slot)](AsyncFD fd, DWORD bytes, DWORD err) {
    if (claim(detail::currentDispatcher(), fd, raw)) (*slot)(fd, bytes, err);
  };
  std::vector<Dispatcher::InFlight>& list = p.operations[fd];
  try {
    list.reserve(list.size() + 1);
  } catch (...) {
    if (list.empty()) p.operations.erase(fd);
    throw;
  }
  const DWORD err = issue(static_cast<OVERLAPPED*>(raw));
  if (err != 0) {
    if (list.empty()) p.operations.erase(fd);
    return err;
  }
  // The completion cannot run before poll dequeues it, so `done` may go in after the call.
  target = std::move(done);
  list.push_back(Dispatcher::InFlight{raw, fut, op});
  ++p.pendingOperations;
  (void)ov.release(); // the port's now, until poll dequeues it
  detail::stateOf(fut).setCancelHook(
      detail::CancelHook::descriptor(static_cast<std::intptr_t>(fd)));
  return 0;
}

// Nim sets every socket of the dispatcher non-blocking (setBlocking(false)), on Windows too: the
// overlapped calls do not care, and a direct send or recv on the socket then never blocks.
bool setNonBlocking(SOCKET s) {
  u_long one = 1;
  return ioctlsocket(s, FIONBIO, &one) == 0;
}

SOCKET openSocket(int domain, int sockType, int protocol, bool inheritable) {
  startWinsock();
  return WSASocketW(domain, sockType, protocol, nullptr, 0,
                    WSA_FLAG_OVERLAPPED | (inheritable ? 0 : WSA_FLAG_NO_HANDLE_INHERIT));
}

// AcceptEx writes both addresses after the data (none here), each in its own size plus 16 bytes.
constexpr DWORD kAcceptAddrLen = sizeof(sockaddr_storage) + 16;

struct AcceptState {
  Future<AcceptResult> fut;
  const char* op;
  SocketFlags flags;
  bool inheritable;
  OwnedSocket client;
  char addresses[2 * kAcceptAddrLen];
};

void startAccept(AsyncFD listener, std::unique_ptr<AcceptState> st);

// The completion of one AcceptEx (Nim's acceptAddr completionData.cb).
void finishAccept(AsyncFD listener, std::unique_ptr<AcceptState> st, DWORD err) {
  if (err != 0) {
    // A connection reset before it was accepted is not this listener's failure: accept the next
    // (Nim issues a new acceptAddr and chains it).
    if (isDisconnect(st->flags, err)) return startAccept(listener, std::move(st));
    st->fut.fail(OSError(static_cast<int>(err), where(st->op, listener)));
    return;
  }
  const SOCKET client = st->client.get();
  const SOCKET listening = handle(listener);
  // The accepted socket takes the listener's properties only now (getpeername works after it).
  if (setsockopt(client, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT,
                 reinterpret_cast<const char*>(&listening), sizeof listening) != 0) {
    st->fut.fail(OSError(WSAGetLastError(), where(st->op, listener)));
    return;
  }
  sockaddr* local = nullptr;
  sockaddr* remote = nullptr;
  int localLen = 0;
  int remoteLen = 0;
  extensions().getAcceptExSockaddrs(st->addresses, 0, kAcceptAddrLen, kAcceptAddrLen, &local,
                                    &localLen, &remote, &remoteLen);
  sockaddr_storage peer{};
  std::memcpy(&peer, remote, static_cast<std::size_t>(std::min<int>(remoteLen, sizeof peer)));
  std::string address = detail::numericAddress(peer);
  setNonBlocking(client);
  try {
    register_(AsyncFD(client));
  } catch (...) {
    st->fut.fail(std::current_exception()); // st->client closes it
    return;
  }
  st->client.release();
  st->fut.complete(AcceptResult{std::move(address), AsyncFD(client)});
}

// One AcceptEx, with a client socket of the listener's family made for it (Nim makes it the same
// way, before the call).
void startAccept(AsyncFD listener, std::unique_ptr<AcceptState> st) {
  sockaddr_storage bound{};
  int boundLen = sizeof bound;
  if (getsockname(handle(listener), reinterpret_cast<sockaddr*>(&bound), &boundLen) != 0) {
    st->fut.fail(OSError(WSAGetLastError(), where(st->op, listener)));
    return;
  }
  OwnedSocket client(openSocket(bound.ss_family, SOCK_STREAM, IPPROTO_TCP, st->inheritable));
  if (client.get() == INVALID_SOCKET) {
    st->fut.fail(OSError(WSAGetLastError(), where(st->op, listener)));
    return;
  }
  AcceptState& s = *st;
  s.client.reset(client.release()); // the previous attempt's socket, if any, is closed
  const Future<AcceptResult> fut = s.fut;
  CompletionCallback done = [st = std::move(st)](AsyncFD fd, DWORD, DWORD err) mutable {
    finishAccept(fd, std::move(st), err);
  };
  const DWORD err = submit(s.op, listener, fut, done, [&s, listener](OVERLAPPED* ov) {
    DWORD received = 0;
    return extensionResult(extensions().acceptEx(handle(listener), s.client.get(), s.addresses, 0,
                                                 kAcceptAddrLen, kAcceptAddrLen, &received, ov));
  });
  if (err != 0) fut.fail(OSError(static_cast<int>(err), where(s.op, listener)));
}

Future<AcceptResult> acceptAs(const char* op, AsyncFD socket, SocketFlags flags, bool inheritable) {
  checkRegistered(op, socket);
  Future<AcceptResult> retFuture = newFuture<AcceptResult>(op);
  startAccept(socket, std::unique_ptr<AcceptState>(
                          new AcceptState{retFuture, op, flags, inheritable, OwnedSocket(), {}}));
  return retFuture;
}

// What a send owns: its bytes and how many are out.
struct SendState {
  Future<void> fut;
  std::string data;
  std::size_t written = 0;
  SocketFlags flags;
};

void startSend(AsyncFD fd, std::unique_ptr<SendState> st);

// The completion of one WSASend: a partial write sends the rest (Nim's send completes when the
// one WSASend does; an overlapped WSASend on a stream socket nearly always writes everything).
void finishSend(AsyncFD fd, std::unique_ptr<SendState> st, DWORD bytes, DWORD err) {
  if (err != 0) {
    if (isDisconnect(st->flags, err)) {
      st->fut.complete();
    } else {
      st->fut.fail(OSError(static_cast<int>(err), where("send", fd)));
    }
    return;
  }
  st->written += bytes;
  if (st->written < st->data.size() && bytes > 0) return startSend(fd, std::move(st));
  st->fut.complete();
}

void startSend(AsyncFD fd, std::unique_ptr<SendState> st) {
  SendState& s = *st;
  const Future<void> fut = s.fut;
  const SocketFlags flags = s.flags;
  CompletionCallback done = [st = std::move(st)](AsyncFD fd, DWORD bytes, DWORD err) mutable {
    finishSend(fd, std::move(st), bytes, err);
  };
  const DWORD err = submit("send", fd, fut, done, [&s, fd](OVERLAPPED* ov) {
    WSABUF buf{static_cast<ULONG>(s.data.size() - s.written), s.data.data() + s.written};
    return wsaResult(WSASend(handle(fd), &buf, 1, nullptr, 0, ov, nullptr));
  });
  if (err == 0) return;
  if (isDisconnect(flags, err)) {
    fut.complete();
  } else {
    fut.fail(OSError(static_cast<int>(err), where("send", fd)));
  }
}

Future<void> sendOwned(AsyncFD socket, std::string data, SocketFlags flags) {
  Future<void> retFuture = newFuture<void>("send");
  if (data.empty()) {
    retFuture.complete();
    return retFuture;
  }
  startSend(socket,
            std::unique_ptr<SendState>(new SendState{retFuture, std::move(data), 0, flags}));
  return retFuture;
}

// What one receive owns: where the kernel writes (copied out to the caller's memory only when it
// completes, rule 1 above), and for recvFromInto the sender's address.
struct RecvState {
  std::string buf;
  DWORD flags = 0; // WSARecv's in/out flags
  sockaddr_storage from{};
  INT fromLen = sizeof(sockaddr_storage);
};

// Starts one WSARecv (or WSARecvFrom, with `from`) into st->buf; finish(st, bytes, err) runs on
// its completion, and also at once if the call fails at once.
template <class Finish>
void startRecv(const char* op, AsyncFD fd, const FutureBase& fut, std::unique_ptr<RecvState> st,
               bool from, Finish finish) {
  RecvState& s = *st;
  CompletionCallback done = [st = std::move(st), finish](AsyncFD, DWORD bytes, DWORD err) mutable {
    finish(*st, bytes, err);
  };
  const DWORD err = submit(op, fd, fut, done, [&s, fd, from](OVERLAPPED* ov) {
    WSABUF buf{static_cast<ULONG>(s.buf.size()), s.buf.data()};
    if (!from) return wsaResult(WSARecv(handle(fd), &buf, 1, nullptr, &s.flags, ov, nullptr));
    return wsaResult(WSARecvFrom(handle(fd), &buf, 1, nullptr, &s.flags,
                                 reinterpret_cast<sockaddr*>(&s.from), &s.fromLen, ov, nullptr));
  });
  if (err != 0) finish(s, 0, err); // `done` still owns the state here
}

// A datagram longer than the buffer completes with ERROR_MORE_DATA (WSAEMSGSIZE at once) and its
// first `size` bytes, the rest lost: that is recvfrom's truncation on POSIX, not an error.
bool isTruncatedDatagram(DWORD err) {
  return err == ERROR_MORE_DATA || err == WSAEMSGSIZE;
}

} // namespace

AsyncFD createAsyncNativeSocket(int domain, int sockType, int protocol, bool inheritable) {
  OwnedSocket s(openSocket(domain, sockType, protocol, inheritable));
  if (s.get() == INVALID_SOCKET) throw OSError(WSAGetLastError(), "createAsyncNativeSocket");
  if (!setNonBlocking(s.get())) throw OSError(WSAGetLastError(), "createAsyncNativeSocket");
  if (sockType == SOCK_DGRAM) {
    // A datagram sent to a closed port makes Windows fail the socket's next receive with
    // WSAECONNRESET; POSIX reports nothing on an unconnected socket, and neither do we.
    BOOL off = FALSE;
    DWORD bytes = 0;
    WSAIoctl(s.get(), SIO_UDP_CONNRESET, &off, sizeof off, nullptr, 0, &bytes, nullptr, nullptr);
  }
  register_(AsyncFD(s.get()));
  return AsyncFD(s.release());
}

Future<std::string> recv(AsyncFD socket, int size, SocketFlags flags) {
  checkRegistered("recv", socket);
  detail::checkSize("recv", socket, size);
  rejectPeek("recv", socket, flags);
  Future<std::string> retFuture = newFuture<std::string>("recv");
  auto st = std::make_unique<RecvState>();
  st->buf.resize(static_cast<std::size_t>(size));
  startRecv("recv", socket, retFuture, std::move(st), false,
            [retFuture, socket, flags](RecvState& s, DWORD bytes, DWORD err) {
              if (err != 0) {
                if (isDisconnect(flags, err)) {
                  retFuture.complete(std::string());
                } else {
                  retFuture.fail(OSError(static_cast<int>(err), where("recv", socket)));
                }
                return;
              }
              s.buf.resize(bytes); // 0: the peer closed
              retFuture.complete(std::move(s.buf));
            });
  return retFuture;
}

Future<int> recvInto(AsyncFD socket, void* buf, int size, SocketFlags flags) {
  checkRegistered("recvInto", socket);
  detail::checkSize("recvInto", socket, size);
  rejectPeek("recvInto", socket, flags);
  detail::checkNotNull("recvInto", socket, buf != nullptr, "buffer");
  Future<int> retFuture = newFuture<int>("recvInto");
  auto st = std::make_unique<RecvState>();
  st->buf.resize(static_cast<std::size_t>(size));
  startRecv("recvInto", socket, retFuture, std::move(st), false,
            [retFuture, socket, flags, buf](RecvState& s, DWORD bytes, DWORD err) {
              if (err != 0) {
                if (isDisconnect(flags, err)) {
                  retFuture.complete(0);
                } else {
                  retFuture.fail(OSError(static_cast<int>(err), where("recvInto", socket)));
                }
                return;
              }
              std::memcpy(buf, s.buf.data(), bytes);
              retFuture.complete(static_cast<int>(bytes));
            });
  return retFuture;
}

Future<int> recvFromInto(AsyncFD socket, void* data, int size, sockaddr* saddr, socklen_t* saddrLen,
                         SocketFlags flags) {
  checkRegistered("recvFromInto", socket);
  detail::checkSize("recvFromInto", socket, size);
  rejectPeek("recvFromInto", socket, flags);
  detail::checkNotNull("recvFromInto", socket,
                       data != nullptr && saddr != nullptr && saddrLen != nullptr,
                       "a buffer or address pointer");
  Future<int> retFuture = newFuture<int>("recvFromInto");
  auto st = std::make_unique<RecvState>();
  st->buf.resize(static_cast<std::size_t>(size));
  startRecv("recvFromInto", socket, retFuture, std::move(st), true,
            [retFuture, socket, data, saddr, saddrLen](RecvState& s, DWORD bytes, DWORD err) {
              // As in Nim, no error is a disconnection here: a datagram socket has no connection.
              if (err != 0 && !isTruncatedDatagram(err)) {
                retFuture.fail(OSError(static_cast<int>(err), where("recvFromInto", socket)));
                return;
              }
              if (isTruncatedDatagram(err)) bytes = static_cast<DWORD>(s.buf.size());
              std::memcpy(data, s.buf.data(), bytes);
              const int len = std::min<int>(*saddrLen, s.fromLen);
              std::memcpy(saddr, &s.from, static_cast<std::size_t>(std::max(len, 0)));
              *saddrLen = s.fromLen;
              retFuture.complete(static_cast<int>(bytes)); // 0 is an empty datagram
            });
  return retFuture;
}

Future<void> sendTo(AsyncFD socket, const void* data, int size, const sockaddr* saddr,
                    socklen_t saddrLen, SocketFlags flags) {
  detail::checkSendTo(socket, data, size, saddr, saddrLen);
  (void)flags; // as in Nim, the caller's flags are not passed on (SafeDisconn means nothing here)
  // The datagram and its destination are copied now (rule 1 above; Nim copies the address too).
  struct SendToState {
    std::string data;
    sockaddr_storage to;
  };
  auto st = std::make_unique<SendToState>();
  if (size > 0) st->data.assign(static_cast<const char*>(data), static_cast<std::size_t>(size));
  std::memcpy(&st->to, saddr, static_cast<std::size_t>(saddrLen));
  SendToState& s = *st;
  Future<void> retFuture = newFuture<void>("sendTo");
  CompletionCallback done = [st = std::move(st), retFuture](AsyncFD fd, DWORD, DWORD err) {
    if (err != 0) {
      retFuture.fail(OSError(static_cast<int>(err), where("sendTo", fd)));
    } else {
      retFuture.complete(); // a datagram leaves whole or not at all
    }
  };
  const DWORD err =
      submit("sendTo", socket, retFuture, done, [&s, socket, saddrLen](OVERLAPPED* ov) {
        WSABUF buf{static_cast<ULONG>(s.data.size()), s.data.data()};
        return wsaResult(WSASendTo(handle(socket), &buf, 1, nullptr, 0,
                                   reinterpret_cast<const sockaddr*>(&s.to), saddrLen, ov,
                                   nullptr));
      });
  if (err != 0) retFuture.fail(OSError(static_cast<int>(err), where("sendTo", socket)));
  return retFuture;
}

Future<void> send(AsyncFD socket, const void* buf, int size, SocketFlags flags) {
  checkRegistered("send", socket);
  detail::checkLength("send", socket, size);
  detail::checkNotNull("send", socket, buf != nullptr || size == 0, "buffer");
  // Copied (rule 1 above): the kernel reads it after the future may have failed.
  return sendOwned(socket,
                   size > 0
                       ? std::string(static_cast<const char*>(buf), static_cast<std::size_t>(size))
                       : std::string(),
                   flags);
}

Future<void> send(AsyncFD socket, std::string data, SocketFlags flags) {
  checkRegistered("send", socket);
  return sendOwned(socket, std::move(data), flags);
}

namespace detail {

Future<AcceptResult> accept(const char* op, AsyncFD socket, SocketFlags flags, bool inheritable) {
  return acceptAs(op, socket, flags, inheritable);
}

int lastSocketError() noexcept {
  return WSAGetLastError();
}

void startSockets() {
  startWinsock();
}

// On Windows getaddrinfo's result is a WSA error code, with its own message.
OSError resolveError(int rc, const std::string& what) {
  return OSError(rc, what);
}

// Windows sockets here are never local (AF_UNIX) ones.
std::string localPath(const sockaddr_storage&) {
  return std::string();
}

// Nim's connect on Windows: ConnectEx, which needs a bound socket, so an unbound one is bound to
// the wildcard address of the target's family first.
Future<void> Family::connectAddress(AsyncFD socket, const AddrInfo& target) {
  Future<void> retFuture = newFuture<void>("connect");
  const SOCKET s = handle(socket);
  sockaddr_storage bound{};
  int boundLen = sizeof bound;
  if (::getsockname(s, reinterpret_cast<sockaddr*>(&bound), &boundLen) != 0) {
    sockaddr_storage any{};
    any.ss_family = target.addr.ss_family;
    const int anyLen = any.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (::bind(s, reinterpret_cast<const sockaddr*>(&any), anyLen) != 0) {
      retFuture.fail(OSError(WSAGetLastError(), where("connect", socket)));
      return retFuture;
    }
  }
  // ConnectEx may read the address until it completes: the operation keeps its own copy.
  auto to = std::make_unique<AddrInfo>(target);
  const AddrInfo& addr = *to;
  CompletionCallback done = [to = std::move(to), retFuture](AsyncFD fd, DWORD, DWORD err) {
    if (err != 0) {
      retFuture.fail(OSError(static_cast<int>(err), where("connect", fd)));
      return;
    }
    // Without it getpeername, shutdown and the like fail on the connected socket.
    if (::setsockopt(handle(fd), SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, nullptr, 0) != 0) {
      retFuture.fail(OSError(WSAGetLastError(), where("connect", fd)));
      return;
    }
    retFuture.complete();
  };
  const DWORD err = submit("connect", socket, retFuture, done, [&addr, s](OVERLAPPED* ov) {
    return extensionResult(extensions().connectEx(s, reinterpret_cast<const sockaddr*>(&addr.addr),
                                                  addr.addrLen, nullptr, 0, nullptr, ov));
  });
  if (err != 0) retFuture.fail(OSError(static_cast<int>(err), where("connect", socket)));
  return retFuture;
}

} // namespace detail

} // namespace asyncdispatch
