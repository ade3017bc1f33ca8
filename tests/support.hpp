// What every test file shares: the list of cases compiled out on this platform (compiledOut), the
// end-of-test emptiness check, a bounded waitFor, TCP fixtures on 127.0.0.1 built from the
// library's own calls, and the checks of a reset or broken connection (closeWithReset, isReset,
// isBrokenConnection, SigpipeBlocked).
#pragma once

#include <doctest/doctest.h>

// The tests that call the socket API directly get its headers from here.
#if defined(_WIN32)
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <exception>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <asyncdispatch.hpp>

namespace testsupport {

using namespace asyncdispatch;

// What this build leaves out, and why: each `#if` in tests/*.cpp that removes TEST_CASEs on one
// platform carries, in the branch taken when they are not built, one line at namespace scope
//   [[maybe_unused]] const bool peekOut = testsupport::compiledOut("tests/x.cpp: ...", "why");
// so the reason lives beside the cases, and tests/main.cpp prints the list before doctest runs
// ("compiled out here: <what>: <why>"). Returns true, for the variable that runs the call.
struct CompiledOut {
  std::string what;
  std::string why;
};

inline std::vector<CompiledOut>& compiledOutList() {
  static std::vector<CompiledOut> list; // filled while the test files' globals are initialised
  return list;
}

inline bool compiledOut(const char* what, const char* why) {
  compiledOutList().push_back(CompiledOut{what, why});
  return true;
}

// How many descriptors the selector holds, armed or not.
inline int registeredDescriptors(const PDispatcher& p) {
#if defined(_WIN32) // the IOCP dispatcher has Nim's Windows `handles` set, not a selector
  return static_cast<int>(p->handles.size());
#else
  int n = 0;
  for (const auto& key : p->selector.fds)
    n += key.fd != InvalidIdent ? 1 : 0;
  return n;
#endif
}

// Every test ends with this: the dispatcher must hold nothing (no registered descriptor, no timer,
// no queued callback, no suspended coroutine), so a leak fails the test that made it. Whatever is
// left is then cleared, so one failure does not spill into the next test.
inline void checkDispatcherEmpty() {
  PDispatcher p = getGlobalDispatcher();
  CHECK(registeredDescriptors(p) == 0);
  CHECK(p->timers.empty());
  CHECK(p->callbacks.empty());
  CHECK(activeDescriptors() == 0);
  CHECK_FALSE(hasPendingOperations());
  CHECK(p->suspended.empty());
  p->suspended.destroyAll();
  p->callbacks.clear();
  p->timers.clear();
  p->cancelledTimers = 0;
#if defined(_WIN32) // only sockets are in the IOCP dispatcher's `handles`: the test's to close
  const std::vector<AsyncFD> left(p->handles.begin(), p->handles.end());
  for (AsyncFD fd : left)
    closeSocket(fd);
  // What waits then is a timer's, event's or process's key: the library's, stopped by unregister.
  std::vector<AsyncFD> waited;
  for (const auto& [fd, key] : p->waits)
    waited.push_back(fd);
  for (AsyncFD fd : waited)
    unregister(fd);
#else
  for (auto& key : p->selector.fds) {
    if (key.fd == InvalidIdent) continue;
    // A timer, signal, process or event key's descriptor belongs to the library, which closes
    // it (and restores a signal's mask) on unregister; a socket is the test's to close.
    const bool libraryOwned =
        key.events.contains(Event::Timer) || key.events.contains(Event::Signal) ||
        key.events.contains(Event::Process) || key.events.contains(Event::User);
    if (libraryOwned) {
      unregister(AsyncFD(key.fd));
    } else {
      closeSocket(AsyncFD(key.fd));
    }
  }
#endif
  p->callbacks.clear();
}

// The part of std::jthread the tests use, for the standard libraries that lack it (libc++ before
// 18, Apple's among them, keeps jthread and stop_token experimental): a thread asked to stop and
// joined when destroyed, whose function may take a StopToken.
class StopToken {
public:
  explicit StopToken(const std::atomic<bool>* flag) : flag_(flag) {}
  bool stop_requested() const { return flag_->load(std::memory_order_acquire); }

private:
  const std::atomic<bool>* flag_;
};

class JoiningThread {
public:
  template <class F>
  explicit JoiningThread(F&& f) : stop_(std::make_unique<std::atomic<bool>>(false)) {
    if constexpr (std::is_invocable_v<F&, StopToken>) {
      thread_ = std::thread(std::forward<F>(f), StopToken(stop_.get()));
    } else {
      thread_ = std::thread(std::forward<F>(f));
    }
  }
  JoiningThread(JoiningThread&&) noexcept = default;
  JoiningThread& operator=(JoiningThread&&) = delete;
  ~JoiningThread() {
    if (!thread_.joinable()) return;
    request_stop();
    thread_.join();
  }
  void request_stop() { stop_->store(true, std::memory_order_release); }
  void join() { thread_.join(); }

private:
  std::unique_ptr<std::atomic<bool>> stop_;
  std::thread thread_;
};

using Clock = std::chrono::steady_clock;

inline double msSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// "fd 7", as error messages name a descriptor.
inline std::string fdText(AsyncFD fd) {
  return "fd " + std::to_string(static_cast<int>(fd));
}

// Whether `part` occurs in `text` (dumps and error messages).
inline bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The message of the ValueError that `call` throws, or a failed check.
template <class F>
std::string valueErrorOf(F&& call) {
  try {
    call();
  } catch (const ValueError& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL_CHECK("not a ValueError: " << std::string(e.what()));
    return {};
  }
  FAIL_CHECK("no ValueError was thrown");
  return {};
}

// Whether a descriptor (a handle on Windows) is still open: for the tests of what the library
// closes and what it leaves open.
#if defined(_WIN32)
inline bool isOpen(int fd) {
  DWORD flags = 0; // a handle is open while Windows still knows its flags
  return GetHandleInformation(reinterpret_cast<HANDLE>(static_cast<std::intptr_t>(fd)), &flags) !=
         0;
}
#else
inline bool isOpen(int fd) {
  return fcntl(fd, F_GETFD) >= 0 || errno != EBADF;
}

// The portable POSIX spellings of what the tests do with raw descriptors: Linux has flags that
// macOS and the BSDs lack (SOCK_CLOEXEC, SOCK_NONBLOCK, MSG_NOSIGNAL on macOS, pipe2 on macOS).

// A raw socket the dispatcher has never seen, close-on-exec (and non-blocking when asked): in
// one call where socket() takes SOCK_CLOEXEC, else with fcntl right after. -1 on failure.
inline int cloexecSocket(int domain, int type, bool nonBlocking = false) {
#if defined(SOCK_CLOEXEC) && defined(SOCK_NONBLOCK)
  return ::socket(domain, type | SOCK_CLOEXEC | (nonBlocking ? SOCK_NONBLOCK : 0), 0);
#else
  const int fd = ::socket(domain, type, 0);
  if (fd < 0) return -1;
  if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 ||
      (nonBlocking && ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)) {
    ::close(fd);
    return -1;
  }
  return fd;
#endif
}

// A pipe whose two ends are close-on-exec: pipe2 where it exists, else pipe and fcntl.
inline int cloexecPipe(int fds[2]) {
#if defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__) ||   \
    defined(__DragonFly__) || defined(__sun)
  return ::pipe2(fds, O_CLOEXEC);
#else
  if (::pipe(fds) != 0) return -1;
  for (int i = 0; i < 2; ++i) {
    if (::fcntl(fds[i], F_SETFD, FD_CLOEXEC) != 0) {
      ::close(fds[0]);
      ::close(fds[1]);
      return -1;
    }
  }
  return 0;
#endif
}

// send() on a raw socket that never raises SIGPIPE when the peer has gone: with MSG_NOSIGNAL
// where send() takes it, and where the socket has SO_NOSIGPIPE (macOS, whose older kernels
// ignore MSG_NOSIGNAL) with that set first. `flags` are added (MSG_DONTWAIT ...).
inline ssize_t sendNoSigpipe(int fd, const void* data, std::size_t size, int flags = 0) {
#if defined(SO_NOSIGPIPE)
  const int on = 1;
  if (::setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof on) != 0) return -1;
#endif
#if defined(MSG_NOSIGNAL)
  flags |= MSG_NOSIGNAL;
#endif
  return ::send(fd, data, size, flags);
}

// The descriptors open in this process, in order: /proc/self/fd where there is one (Linux),
// else every number below the descriptor limit (at most 65,536) probed with fcntl(F_GETFD).
// The directory stream's own descriptor is not counted. The emulators' own descriptors are
// settled first: the kqueue emulator reclaims a closed kq lazily, and the event ports emulator
// keeps one descriptor for all the ports of the process, opened by the first.
inline std::vector<int> openDescriptors() {
#if defined(EMU_KQUEUE)
  emu_kqueue_collect();
#endif
#if defined(EMU_EVENTPORTS_PORT_H)
  static const bool emulatorReady = [] {
    const int port = port_create();
    if (port >= 0) ::close(port);
    return true;
  }();
  (void)emulatorReady;
#endif
  std::vector<int> open;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    const int own = ::dirfd(dir);
    while (const dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] == '.') continue;
      const int fd = std::stoi(entry->d_name);
      if (fd != own) open.push_back(fd);
    }
    ::closedir(dir);
  } else {
    const long limit = std::min(::sysconf(_SC_OPEN_MAX), 65536L);
    for (int fd = 0; fd < limit; ++fd) {
      if (::fcntl(fd, F_GETFD) >= 0) open.push_back(fd);
    }
  }
  std::sort(open.begin(), open.end());
  return open;
}
#endif

// Polls until done() or ms have passed: something that never happens fails the caller's checks
// instead of hanging the suite.
template <class F>
void pollUntil(F&& done, int ms = 5000) {
  const Clock::time_point start = Clock::now();
  while (!done() && msSince(start) < ms)
    poll(50);
}

// Polls until fut has finished, without reading it; a future that does not finish within `ms`
// fails the test instead of hanging the suite.
inline void settle(const FutureBase& fut, int ms = 5000) {
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(ms);
  while (!fut.finished()) {
    REQUIRE_MESSAGE(Clock::now() < deadline, "future " << std::string(fut.fromProc())
                                                       << " did not finish within " << ms << " ms");
    poll(50);
  }
}

// waitFor with a deadline: settle, then read (a failure is rethrown); like waitFor, it moves the
// value out when the caller passed the only handle.
template <class T>
T waitWithin(Future<T> fut, int ms = 5000) {
  settle(fut, ms);
  return std::move(fut).read();
}

// The OSError a finished future failed with. Any other outcome fails the check and gives an
// OSError with code 0, so the caller's checks fail too but its cleanup still runs.
inline OSError osErrorOf(const FutureBase& fut) {
  if (!fut.failed()) {
    FAIL_CHECK("future " << std::string(fut.fromProc()) << " did not fail");
    return OSError(0, "(the future did not fail)");
  }
  try {
    std::rethrow_exception(fut.readError());
  } catch (const OSError& e) {
    return e;
  } catch (const std::exception& e) {
    FAIL_CHECK("not an OSError: " << std::string(e.what()));
  }
  return OSError(0, "(not an OSError)");
}

// Runs queued callbacks (a coroutine finishing one hop after its operation) until none is left.
inline void runDry() {
  for (int i = 0; i < 100 && hasPendingOperations(); ++i)
    poll(10);
}

#if defined(_WIN32)
// Winsock must be started before a test's own socket calls; the library starts it on its first
// socket, which a test's raw socket may come before. WSAStartup counts, so this is harmless.
inline void startWinsock() {
  static const bool started = [] {
    WSADATA data;
    return WSAStartup(MAKEWORD(2, 2), &data) == 0;
  }();
  REQUIRE(started);
}

// Whether this machine can bind ::1 (Wine's host may have no IPv6 loopback).
inline bool hasIPv6Loopback() {
  startWinsock();
  const SOCKET fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  if (fd == INVALID_SOCKET) return false;
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_loopback;
  const bool ok = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
  ::closesocket(fd);
  return ok;
}
#else
// Whether this machine can bind ::1 (some containers have no IPv6 loopback).
inline bool hasIPv6Loopback() {
  const int fd = cloexecSocket(AF_INET6, SOCK_STREAM);
  if (fd < 0) return false;
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_loopback;
  const bool ok = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}
#endif

// A listening TCP socket on 127.0.0.1 with a port the kernel picked.
struct Listener {
  AsyncFD fd;
  Port port;
};

inline Listener listenLocal(Domain domain = Domain::Inet) {
  const AsyncFD fd = createAsyncNativeSocket(domain);
  bindAddr(fd, Port(0), domain == Domain::Inet6 ? "::1" : "127.0.0.1", domain);
  listen(fd);
  return Listener{fd, getLocalAddr(fd).second};
}

// Two connected, registered TCP sockets: {client, server side}.
inline std::pair<AsyncFD, AsyncFD> connectedPair() {
  Listener l = listenLocal();
  Future<AsyncFD> accepted = accept(l.fd);
  const AsyncFD client = waitWithin(dial("127.0.0.1", l.port));
  const AsyncFD server = waitWithin(accepted);
  closeSocket(l.fd);
  return {client, server};
}

// Forces an RST instead of a FIN when fd is closed (SO_LINGER {1, 0}).
inline void closeWithReset(AsyncFD fd) {
  const linger reset{1, 0};
  REQUIRE(::setsockopt(static_cast<SocketHandle>(fd), SOL_SOCKET, SO_LINGER,
                       reinterpret_cast<const char*>(&reset), sizeof reset) == 0);
  closeSocket(fd);
}

// The error of a connection the peer reset: ECONNRESET, or on Windows WSAECONNRESET (a call) or
// ERROR_NETNAME_DELETED (a completion, Nim's SafeDisconn set).
inline bool isReset(const OSError& e) {
#if defined(_WIN32)
  return e.code().value() == WSAECONNRESET || e.code().value() == ERROR_NETNAME_DELETED;
#else
  return e.code() == std::errc::connection_reset;
#endif
}

// The error of a send to a peer that has gone: EPIPE or a reset (Windows: also WSAECONNABORTED).
inline bool isBrokenConnection(const OSError& e) {
#if defined(_WIN32)
  return isReset(e) || e.code().value() == WSAECONNABORTED || e.code().value() == WSAESHUTDOWN;
#else
  return e.code() == std::errc::broken_pipe || isReset(e);
#endif
}

#if defined(_WIN32)
// Windows has no SIGPIPE: nothing to block, nothing ever raised.
struct SigpipeBlocked {
  SigpipeBlocked() noexcept {} // user-provided: the guard is a variable that is never read
  static bool raised() { return false; }
};
#else
// Blocks SIGPIPE for the test so that a send raising it leaves it pending (a failed check)
// instead of killing the suite; the destructor discards it and restores the mask.
struct SigpipeBlocked {
  sigset_t old{};
  SigpipeBlocked() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    REQUIRE(pthread_sigmask(SIG_BLOCK, &set, &old) == 0);
    REQUIRE_FALSE(raised());
  }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;
  ~SigpipeBlocked() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    // sigwait takes a pending signal at once; it is called only for one known to be pending
    // (sigtimedwait, which could poll, is not in macOS).
    int taken = 0;
    while (raised() && sigwait(&set, &taken) == 0) {
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  static bool raised() {
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    return sigismember(&pending, SIGPIPE) == 1;
  }
};
#endif

} // namespace testsupport
