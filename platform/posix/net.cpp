// Socket operations over the readiness contract, shared by every selector backend (Nim's POSIX
// half of asyncdispatch). Each operation registers a callback with addRead/addWrite; the
// syscall happens when the selector reports the descriptor ready, and EAGAIN/EINTR mean "not
// yet": the callback returns false and waits for the next readiness.
#include "../../include/asyncdispatch/net.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "../../src/family.hpp"
#include "../../src/loop.hpp"
#include "../../src/sockets.hpp"

namespace asyncdispatch {

namespace {

using detail::checkRegistered;
using detail::handle;

// Linux and the BSDs take MSG_NOSIGNAL per call; macOS has only the SO_NOSIGPIPE socket option,
// which createAsyncNativeSocket sets.
#if defined(MSG_NOSIGNAL)
constexpr int kNoSignal = MSG_NOSIGNAL;
#else
constexpr int kNoSignal = 0;
#endif

// Nim's isDisconnectionError for POSIX: only these three, and only with SafeDisconn.
bool isDisconnect(SocketFlags flags, int err) {
  return flags.contains(SocketFlag::SafeDisconn) &&
         (err == ECONNRESET || err == EPIPE || err == ENETRESET);
}

// Not an error: the descriptor was not really ready, or a signal interrupted the call.
bool isRetry(int err) {
  return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

int recvFlags(SocketFlags flags) {
  return flags.contains(SocketFlag::Peek) ? MSG_PEEK : 0;
}

// If closeSocket or unregister is failing the operations on fd, fails fut accordingly.
bool failIfAbandoned(const FutureBase& fut, const char* op, AsyncFD fd) {
  const char* why = detail::abandonReason(fd);
  if (why == nullptr) return false;
  fut.fail(OSError(EBADF, detail::where(op, fd),
                   std::string("socket ") + why + " while the operation was pending"));
  return true;
}

// A socket operation waiting in a descriptor's list: the future it finishes and the step that
// tries the system call on each readiness. It names its future (servedFuture), so that cancel()
// can find it in the list and take it out.
template <class T, class Step>
struct Operation {
  Future<T> fut;
  Step step;
  bool operator()(AsyncFD fd) { return step(fut, fd); }
  const void* servedFuture() const noexcept { return &detail::stateOf(fut); }
};

// Nim's addRead/addWrite of an operation's callback, plus the hook by which fut.cancel() takes
// the operation out of fd's list again.
template <class T, class Step>
void waitReadable(AsyncFD fd, const Future<T>& fut, Step step) {
  addRead(fd, Operation<T, Step>{fut, std::move(step)});
  detail::stateOf(fut).setCancelHook(
      detail::CancelHook::descriptor(static_cast<std::intptr_t>(fd)));
}
template <class T, class Step>
void waitWritable(AsyncFD fd, const Future<T>& fut, Step step) {
  addWrite(fd, Operation<T, Step>{fut, std::move(step)});
  detail::stateOf(fut).setCancelHook(
      detail::CancelHook::descriptor(static_cast<std::intptr_t>(fd)));
}

// accept4 makes the client non-blocking and close-on-exec atomically; macOS lacks it.
int acceptClient(SocketHandle listener, sockaddr_storage& addr, bool inheritable) {
  socklen_t len = sizeof addr;
#if defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC)
  return ::accept4(listener, reinterpret_cast<sockaddr*>(&addr), &len,
                   SOCK_NONBLOCK | (inheritable ? 0 : SOCK_CLOEXEC));
#else
  const int client = ::accept(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  if (client >= 0) {
    fcntl(client, F_SETFL, fcntl(client, F_GETFL) | O_NONBLOCK);
    if (!inheritable) fcntl(client, F_SETFD, FD_CLOEXEC);
  }
  return client;
#endif
}

// Linux and the BSDs make the socket non-blocking and close-on-exec atomically; macOS cannot.
int openSocket(int domain, int sockType, int protocol, bool inheritable) {
#if defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC)
  return ::socket(domain, sockType | SOCK_NONBLOCK | (inheritable ? 0 : SOCK_CLOEXEC), protocol);
#else
  const int fd = ::socket(domain, sockType, protocol);
  if (fd >= 0) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (!inheritable) fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  return fd;
#endif
}

// Where recv reads before it knows how much arrived: one buffer per thread. Allocating `size`
// bytes for every recv and freeing them (a string of 16 KiB that holds 64 bytes) costs more, and
// makes glibc grow and trim its heap with brk about once every five messages.
constexpr int kScratchSize = 64 * 1024;
char* scratchBuffer(int size) {
  thread_local std::unique_ptr<char[]> scratch;
  if (size > kScratchSize) return nullptr;
  if (!scratch) scratch = std::make_unique<char[]>(kScratchSize);
  return scratch.get();
}

// One descriptor per thread held in reserve for acceptAddr. When accept fails with EMFILE, the
// waiting connection keeps the listener readable, so a level-triggered loop would spin on it.
// As libuv does, the spare is spent to accept that connection and close it at once (its client
// sees the connection closed rather than rotting in the backlog), then taken back: the loop stays
// quiet, and accepting goes on as soon as descriptors are free again.
class SpareDescriptor {
public:
  SpareDescriptor() = default;
  SpareDescriptor(const SpareDescriptor&) = delete;
  SpareDescriptor& operator=(const SpareDescriptor&) = delete;
  ~SpareDescriptor() { release(); }

  // Opened on the thread's first acceptAddr, while descriptors are still to be had.
  void reserve() {
    if (fd_ < 0) fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  // Accepts one waiting connection in the spare's slot and closes it; false without a spare.
  bool dropOneConnection(SocketHandle listener) {
    if (fd_ < 0) return false;
    release();
    sockaddr_storage addr{};
    const int dropped = acceptClient(listener, addr, false);
    if (dropped >= 0) ::close(dropped);
    reserve();
    return true;
  }

private:
  void release() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
};
thread_local SpareDescriptor spare;

Future<AcceptResult> acceptAs(const char* op, AsyncFD socket, SocketFlags flags, bool inheritable) {
  checkRegistered(op, socket);
  spare.reserve();
  Future<AcceptResult> retFuture = newFuture<AcceptResult>(op);
  waitReadable(socket, retFuture,
               [flags, inheritable, op](const Future<AcceptResult>& retFuture, AsyncFD fd) {
                 if (failIfAbandoned(retFuture, op, fd)) return true;
                 sockaddr_storage addr{};
                 const int client = acceptClient(handle(fd), addr, inheritable);
                 if (client < 0) {
                   const int err = errno;
                   // A connection that was reset while queued is not this listener's failure: keep
                   // waiting.
                   if (isRetry(err) || err == ECONNABORTED || isDisconnect(flags, err))
                     return false;
                   if ((err == EMFILE || err == ENFILE) && spare.dropOneConnection(handle(fd)))
                     return false;
                   retFuture.fail(OSError(err, detail::where(op, fd)));
                   return true;
                 }
                 try {
                   register_(AsyncFD(client));
                 } catch (...) {
                   ::close(client);
                   retFuture.fail(std::current_exception());
                   return true;
                 }
                 retFuture.complete(AcceptResult{detail::numericAddress(addr), AsyncFD(client)});
                 return true;
               });
  return retFuture;
}

// One write attempt of Nim's send loop: a partial write waits for the next writability.
bool sendSome(const Future<void>& fut, AsyncFD fd, const char* data, int size, int& written,
              SocketFlags flags) {
  if (failIfAbandoned(fut, "send", fd)) return true;
  const ssize_t n = ::send(handle(fd), data + written, size - written, kNoSignal);
  if (n < 0) {
    const int err = errno;
    if (isRetry(err)) return false;
    if (isDisconnect(flags, err)) {
      fut.complete();
    } else {
      fut.fail(OSError(err, detail::where("send", fd)));
    }
    return true;
  }
  written += static_cast<int>(n);
  if (written < size) return false;
  fut.complete();
  return true;
}

// Beyond Nim, send and sendTo first try to write at once (the socket nearly always has room),
// unless another write is already waiting on fd (bytes must leave in order) or this pass has used
// up its synchronous completions (so a coroutine that sends in a loop cannot starve the others).
bool mayWriteNow(AsyncFD fd) {
  return detail::currentDispatcher().selector.getData(handle(fd)).writeCBs.empty() &&
         detail::takeSynchronousTurn();
}

// A send's first attempt. True when the future is finished; false when the rest must wait for
// writability.
bool sendNow(const Future<void>& fut, AsyncFD fd, const char* data, int size, int& written,
             SocketFlags flags) {
  if (size == 0) {
    fut.complete();
    return true;
  }
  return mayWriteNow(fd) && sendSome(fut, fd, data, size, written, flags);
}

} // namespace

AsyncFD createAsyncNativeSocket(int domain, int sockType, int protocol, bool inheritable) {
  const int fd = openSocket(domain, sockType, protocol, inheritable);
  if (fd < 0) throw OSError(errno, "createAsyncNativeSocket");
#if defined(SO_NOSIGPIPE)
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
  try {
    register_(AsyncFD(fd));
  } catch (...) {
    ::close(fd);
    throw;
  }
  return AsyncFD(fd);
}

Future<std::string> recv(AsyncFD socket, int size, SocketFlags flags) {
  checkRegistered("recv", socket);
  detail::checkSize("recv", socket, size);
  Future<std::string> retFuture = newFuture<std::string>("recv");
  waitReadable(socket, retFuture, [size, flags](const Future<std::string>& retFuture, AsyncFD fd) {
    if (failIfAbandoned(retFuture, "recv", fd)) return true;
    // The buffer is taken now, not while waiting: the thread's scratch buffer, so that the
    // string made from it is exactly as long as what arrived.
    std::string data;
    char* buf = scratchBuffer(size);
    if (buf == nullptr) {
      data.resize(static_cast<std::size_t>(size));
      buf = data.data();
    }
    const ssize_t n = ::recv(handle(fd), buf, static_cast<std::size_t>(size), recvFlags(flags));
    if (n < 0) {
      const int err = errno;
      if (isRetry(err)) return false;
      if (isDisconnect(flags, err)) {
        retFuture.complete(std::string());
      } else {
        retFuture.fail(OSError(err, detail::where("recv", fd)));
      }
      return true;
    }
    if (data.empty()) {
      data.assign(buf, static_cast<std::size_t>(n));
    } else {
      data.resize(static_cast<std::size_t>(n));
      // A short read into a large buffer would keep all of it alive with the string.
      if (data.size() < data.capacity() / 2) data.shrink_to_fit();
    }
    retFuture.complete(std::move(data));
    return true;
  });
  return retFuture;
}

Future<int> recvInto(AsyncFD socket, void* buf, int size, SocketFlags flags) {
  checkRegistered("recvInto", socket);
  detail::checkSize("recvInto", socket, size);
  detail::checkNotNull("recvInto", socket, buf != nullptr, "buffer");
  Future<int> retFuture = newFuture<int>("recvInto");
  waitReadable(socket, retFuture, [buf, size, flags](const Future<int>& retFuture, AsyncFD fd) {
    if (failIfAbandoned(retFuture, "recvInto", fd)) return true;
    const ssize_t n = ::recv(handle(fd), buf, static_cast<std::size_t>(size), recvFlags(flags));
    if (n < 0) {
      const int err = errno;
      if (isRetry(err)) return false;
      if (isDisconnect(flags, err)) {
        retFuture.complete(0);
      } else {
        retFuture.fail(OSError(err, detail::where("recvInto", fd)));
      }
      return true;
    }
    retFuture.complete(static_cast<int>(n));
    return true;
  });
  return retFuture;
}

Future<int> recvFromInto(AsyncFD socket, void* data, int size, sockaddr* saddr, socklen_t* saddrLen,
                         SocketFlags flags) {
  checkRegistered("recvFromInto", socket);
  detail::checkSize("recvFromInto", socket, size);
  detail::checkNotNull("recvFromInto", socket,
                       data != nullptr && saddr != nullptr && saddrLen != nullptr,
                       "a buffer or address pointer");
  Future<int> retFuture = newFuture<int>("recvFromInto");
  waitReadable(socket, retFuture,
               [data, size, saddr, saddrLen, flags](const Future<int>& retFuture, AsyncFD fd) {
                 if (failIfAbandoned(retFuture, "recvFromInto", fd)) return true;
                 const ssize_t n = ::recvfrom(handle(fd), data, static_cast<std::size_t>(size),
                                              recvFlags(flags), saddr, saddrLen);
                 if (n < 0) {
                   // As in Nim, no error is a disconnection here: a datagram socket has no
                   // connection.
                   if (isRetry(errno)) return false;
                   retFuture.fail(OSError(errno, detail::where("recvFromInto", fd)));
                   return true;
                 }
                 retFuture.complete(
                     static_cast<int>(n)); // 0 is an empty datagram, not the end of anything
                 return true;
               });
  return retFuture;
}

Future<void> sendTo(AsyncFD socket, const void* data, int size, const sockaddr* saddr,
                    socklen_t saddrLen, SocketFlags flags) {
  detail::checkSendTo(socket, data, size, saddr, saddrLen);
  (void)flags; // as in Nim, the caller's flags are not passed on (SafeDisconn means nothing here)
  // The destination is copied now, so the caller's sockaddr may go away (Nim copies it too).
  sockaddr_storage to{};
  std::memcpy(&to, saddr, saddrLen);
  Future<void> retFuture = newFuture<void>("sendTo");
  auto sendOne = [data, size, to, saddrLen](const Future<void>& retFuture, AsyncFD fd) {
    if (failIfAbandoned(retFuture, "sendTo", fd)) return true;
    const ssize_t n = ::sendto(handle(fd), data, static_cast<std::size_t>(size), kNoSignal,
                               reinterpret_cast<const sockaddr*>(&to), saddrLen);
    if (n < 0) {
      if (isRetry(errno)) return false;
      retFuture.fail(OSError(errno, detail::where("sendTo", fd)));
      return true;
    }
    retFuture.complete(); // a datagram leaves whole or not at all
    return true;
  };
  if (mayWriteNow(socket) && sendOne(retFuture, socket)) return retFuture;
  waitWritable(socket, retFuture, std::move(sendOne));
  return retFuture;
}

Future<void> send(AsyncFD socket, const void* buf, int size, SocketFlags flags) {
  checkRegistered("send", socket);
  detail::checkLength("send", socket, size);
  detail::checkNotNull("send", socket, buf != nullptr || size == 0, "buffer");
  Future<void> retFuture = newFuture<void>("send");
  const char* data = static_cast<const char*>(buf);
  int written = 0;
  if (sendNow(retFuture, socket, data, size, written, flags)) return retFuture;
  waitWritable(socket, retFuture,
               [data, size, flags, written](const Future<void>& retFuture, AsyncFD fd) mutable {
                 return sendSome(retFuture, fd, data, size, written, flags);
               });
  return retFuture;
}

Future<void> send(AsyncFD socket, std::string data, SocketFlags flags) {
  checkRegistered("send", socket);
  Future<void> retFuture = newFuture<void>("send");
  const int size = static_cast<int>(data.size());
  int written = 0;
  if (sendNow(retFuture, socket, data.data(), size, written, flags)) return retFuture;
  // What is left moves into the callback, which keeps the string until the last byte is out.
  waitWritable(
      socket, retFuture,
      [data = std::move(data), flags, written](const Future<void>& retFuture, AsyncFD fd) mutable {
        return sendSome(retFuture, fd, data.data(), static_cast<int>(data.size()), written, flags);
      });
  return retFuture;
}

namespace detail {

Future<AcceptResult> accept(const char* op, AsyncFD socket, SocketFlags flags, bool inheritable) {
  return acceptAs(op, socket, flags, inheritable);
}

int lastSocketError() noexcept {
  return errno;
}

void startSockets() {}

// getaddrinfo's codes are its own (gai_strerror), not errno's; EAI_SYSTEM means errno says why.
OSError resolveError(int rc, const std::string& what) {
  const int code = rc == EAI_SYSTEM ? errno : ENOENT;
  return OSError(code, what, std::string("Couldn't resolve address: ") + gai_strerror(rc));
}

std::string localPath(const sockaddr_storage& addr) {
  if (addr.ss_family != AF_UNIX) return std::string();
  return reinterpret_cast<const sockaddr_un&>(addr).sun_path;
}

Future<void> Family::connectAddress(AsyncFD socket, const AddrInfo& target) {
  Future<void> retFuture = newFuture<void>("connect");
  if (::connect(handle(socket), reinterpret_cast<const sockaddr*>(&target.addr), target.addrLen) ==
      0) {
    retFuture.complete();
    return retFuture;
  }
  const int err = errno;
  if (err != EINPROGRESS && err != EINTR) {
    retFuture.fail(OSError(err, where("connect", socket)));
    return retFuture;
  }
  // The connection goes on in the kernel; it is done (or failed) once the socket is writable.
  waitWritable(socket, retFuture, [](const Future<void>& retFuture, AsyncFD fd) {
    if (failIfAbandoned(retFuture, "connect", fd)) return true;
    int soError = 0;
    socklen_t len = sizeof soError;
    if (::getsockopt(handle(fd), SOL_SOCKET, SO_ERROR, &soError, &len) != 0) soError = errno;
    if (soError == EINTR || soError == EINPROGRESS) return false;
    if (soError == 0) {
      retFuture.complete();
    } else {
      retFuture.fail(OSError(soError, where("connect", fd)));
    }
    return true;
  });
  return retFuture;
}

} // namespace detail

} // namespace asyncdispatch
