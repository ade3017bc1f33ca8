// The descriptor registry: register_, unregister, contains, addRead/addWrite, the counters,
// maxDescriptors, setInheritable, closeSocket, getIoHandler and the struct layout of Nim's drawing.
#if !defined(_WIN32)
#include <sys/resource.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>
#endif

#if defined(ASYNCDISPATCH_BACKEND_EPOLL)
#include <sys/epoll.h>
#endif

#include <cerrno>
#include <chrono>
#include <climits>
#include <memory>
#include <string>
#include <system_error>
#include <type_traits>
#include <unordered_set>
#include <vector>

#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

namespace {

#if defined(_WIN32)
using RawFd = SOCKET;

// A TCP socket the dispatcher has never seen.
RawFd rawSocket() {
  startWinsock();
  const RawFd fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd != INVALID_SOCKET);
  return fd;
}

void closeRaw(RawFd fd) {
  ::closesocket(fd);
}

void rawSend(AsyncFD fd, const char* data, int size) {
  REQUIRE(::send(static_cast<SOCKET>(fd), data, size, 0) == size);
}

// Whether child processes inherit the handle (what close-on-exec clears on POSIX).
bool inherited(AsyncFD fd) {
  DWORD flags = 0;
  REQUIRE(GetHandleInformation(reinterpret_cast<HANDLE>(static_cast<SOCKET>(fd)), &flags));
  return (flags & HANDLE_FLAG_INHERIT) != 0;
}

// The callbacks addRead and addWrite left waiting on fd (none once its wait key is gone).
const PData* callbacksOf(AsyncFD fd) {
  const auto& waits = getGlobalDispatcher()->waits;
  const auto it = waits.find(fd);
  return it == waits.end() ? nullptr : &it->second.data;
}
#else
using RawFd = int;

// A TCP socket the dispatcher has never seen.
int rawSocket() {
  const int fd = cloexecSocket(AF_INET, SOCK_STREAM);
  REQUIRE(fd >= 0);
  return fd;
}

void closeRaw(RawFd fd) {
  ::close(fd);
}

void rawSend(AsyncFD fd, const char* data, int size) {
  REQUIRE(sendNoSigpipe(static_cast<int>(fd), data, static_cast<std::size_t>(size)) == size);
}

// Restores RLIMIT_NOFILE whatever happens inside the test.
struct RlimitGuard {
  rlimit saved{};
  RlimitGuard() { REQUIRE(getrlimit(RLIMIT_NOFILE, &saved) == 0); }
  ~RlimitGuard() { setrlimit(RLIMIT_NOFILE, &saved); }
};

int expectedMaxDescriptors() {
  rlimit limit{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &limit) == 0);
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur > static_cast<rlim_t>(INT_MAX))
    return INT_MAX - 1;
  return static_cast<int>(limit.rlim_cur) - 1;
}
#endif

// The code of an operation that closeSocket failed: EBADF; on Windows, the aborted overlapped
// call's ERROR_OPERATION_ABORTED (DESIGN §5).
bool failedByClose(const OSError& e) {
#if defined(_WIN32)
  return e.code().value() == ERROR_OPERATION_ABORTED;
#else
  return e.code() == std::errc::bad_file_descriptor;
#endif
}

} // namespace

TEST_CASE("register: registering a descriptor twice throws ValueError naming the fd") {
  const AsyncFD fd = AsyncFD(rawSocket());
  register_(fd);
  CHECK(contains(getGlobalDispatcher(), fd));
  const std::string message = valueErrorOf([&] { register_(fd); });
  CHECK(message.find(fdText(fd)) != std::string::npos);
  CHECK(contains(getGlobalDispatcher(), fd)); // the first registration is untouched
  closeSocket(fd);
  checkDispatcherEmpty();
}

TEST_CASE("register: a registered descriptor arms nothing until an operation waits on it") {
  const AsyncFD fd = AsyncFD(rawSocket());
  register_(fd);
#if defined(_WIN32) // in Nim's `handles`, with nothing in flight and no wait key
  CHECK(getGlobalDispatcher()->handles.contains(fd));
  CHECK_FALSE(getGlobalDispatcher()->operations.contains(fd));
  CHECK(callbacksOf(fd) == nullptr);
#else
  const auto& key = getIoHandler(getGlobalDispatcher()).fds[static_cast<int>(fd)];
  CHECK(key.fd == static_cast<SocketHandle>(fd));
  CHECK(key.events.empty());
  CHECK(key.data.fd == fd);
  CHECK(key.data.readCBs.empty());
  CHECK(key.data.writeCBs.empty());
#endif
  CHECK(activeDescriptors() == 0);
  CHECK_FALSE(hasPendingOperations());
  // Nim: poll with only an idle registered socket has nothing to wait for.
  CHECK_THROWS_WITH_AS(poll(0), "No handles or timers registered in dispatcher.", ValueError);
  closeSocket(fd);
  checkDispatcherEmpty();
}

TEST_CASE("unregister: an unknown descriptor throws ValueError naming the fd") {
  const RawFd raw = rawSocket();
  const std::string message = valueErrorOf([&] { unregister(AsyncFD(raw)); });
  CHECK(message.find(fdText(AsyncFD(raw))) != std::string::npos);
  closeRaw(raw);
  checkDispatcherEmpty();
}

TEST_CASE("unregister: forgets the descriptor without closing it") {
  const AsyncFD fd = createAsyncNativeSocket();
  unregister(fd);
  CHECK_FALSE(contains(getGlobalDispatcher(), fd));
  CHECK(isOpen(static_cast<int>(fd)));
  // Forgotten means it can be registered again.
  register_(fd);
  CHECK(contains(getGlobalDispatcher(), fd));
  closeSocket(fd);
  checkDispatcherEmpty();
}

TEST_CASE("unregister: pending operations fail with an OSError naming the operation and "
          "\"unregistered\"") {
  auto [client, server] = connectedPair();
  Listener l = listenLocal();
  Future<std::string> received = recv(server, 100);
  Future<AsyncFD> accepted = accept(l.fd);
  CHECK(activeDescriptors() == 2);

  unregister(server);
  unregister(l.fd);
  CHECK(activeDescriptors() == 0);
  settle(received);
  settle(accepted);

  const OSError recvError = osErrorOf(received);
  const std::string recvText = recvError.what();
  CHECK(recvText.find("recv(" + fdText(server) + ")") != std::string::npos);
  CHECK(recvText.find("unregistered") != std::string::npos);

  const OSError acceptError = osErrorOf(accepted);
  const std::string acceptText = acceptError.what();
  CHECK(acceptText.find("accept(" + fdText(l.fd) + ")") != std::string::npos);
  CHECK(acceptText.find("unregistered") != std::string::npos);

  // unregister does not close: the descriptors are still ours to close.
  CHECK(isOpen(static_cast<int>(server)));
  CHECK(isOpen(static_cast<int>(l.fd)));
  closeRaw(static_cast<RawFd>(server));
  closeRaw(static_cast<RawFd>(l.fd));
  closeSocket(client);
  runDry();
  checkDispatcherEmpty();
}

TEST_CASE("contains: says whether a descriptor is registered with that dispatcher") {
  const PDispatcher p = getGlobalDispatcher();
  const AsyncFD fd = createAsyncNativeSocket();
  CHECK(contains(p, fd));
  // Another dispatcher has its own registry.
  const PDispatcher other = newDispatcher();
  CHECK_FALSE(contains(other, fd));
  // Far beyond the table, and not a descriptor at all.
  CHECK_FALSE(contains(p, AsyncFD(1 << 20)));
  CHECK_FALSE(contains(p, AsyncFD(-1)));
  closeSocket(fd);
  CHECK_FALSE(contains(p, fd));
  checkDispatcherEmpty();
}

TEST_CASE("addRead: callbacks run in order until one returns false; it and the rest wait for the "
          "next readiness") {
  auto [client, server] = connectedPair();
  // One unread byte keeps server readable on every pass (level-triggered).
  rawSend(client, "x", 1);

  std::vector<std::string> log;
  bool r2Done = false;
  bool addedR4 = false;
  addRead(server, [&](AsyncFD) {
    log.push_back("r1");
    return true;
  });
  addRead(server, [&](AsyncFD fd) {
    log.push_back("r2");
    if (!addedR4) {
      addedR4 = true;
      addRead(fd, [&](AsyncFD) {
        log.push_back("r4");
        return true;
      });
    }
    return r2Done;
  });
  addRead(server, [&](AsyncFD) {
    log.push_back("r3");
    return true;
  });

  for (int i = 0; i < 3; ++i)
    poll(100);
  // Nim's e11: r3, and r4 added inside r2, never run while r2 keeps returning false.
  CHECK(log == std::vector<std::string>{"r1", "r2", "r2", "r2"});
#if defined(_WIN32) // the socket's wait key, gone once nothing waits
  REQUIRE(callbacksOf(server) != nullptr);
  CHECK(callbacksOf(server)->readCBs.size() == 3);
#else
  const PData& data = getIoHandler(getGlobalDispatcher()).fds[static_cast<int>(server)].data;
  CHECK(data.readCBs.size() == 3);
#endif
  CHECK(activeDescriptors() == 1);

  log.clear();
  r2Done = true;
  poll(100);
  CHECK(log == std::vector<std::string>{"r2", "r3", "r4"});
#if defined(_WIN32)
  CHECK(callbacksOf(server) == nullptr);
#else
  CHECK(data.readCBs.empty());
#endif
  CHECK(activeDescriptors() == 0);

  closeSocket(client);
  closeSocket(server);
  checkDispatcherEmpty();
}

TEST_CASE("addRead: a callback that returns true is removed after it runs once") {
  auto [client, server] = connectedPair();
  rawSend(client, "x", 1);
  int calls = 0;
  const AsyncFD expected = server; // clang 14 cannot capture a structured binding
  addRead(server, [&](AsyncFD fd) {
    ++calls;
    CHECK(fd == expected);
    return true;
  });
  CHECK(activeDescriptors() == 1);
  poll(100);
  CHECK(calls == 1);
  CHECK(activeDescriptors() == 0);
  CHECK_FALSE(hasPendingOperations());
  // The byte is still unread, yet nothing waits for it any more.
  CHECK_THROWS_AS(poll(0), ValueError);
  CHECK(calls == 1);
  closeSocket(client);
  closeSocket(server);
  checkDispatcherEmpty();
}

TEST_CASE("addRead: an unregistered descriptor throws ValueError \"File descriptor not "
          "registered.\"") {
  const RawFd raw = rawSocket();
  const std::string message =
      valueErrorOf([&] { addRead(AsyncFD(raw), [](AsyncFD) { return true; }); });
  CHECK(message.find("File descriptor not registered.") != std::string::npos);
  closeRaw(raw);
  checkDispatcherEmpty();
}

TEST_CASE("addWrite: callbacks run in order until one returns false; it and the rest wait for "
          "the next readiness") {
  auto [client, server] = connectedPair();
  std::vector<std::string> log;
  int w2Calls = 0;
  addWrite(client, [&](AsyncFD) {
    log.push_back("w1");
    return true;
  });
  addWrite(client, [&](AsyncFD) {
    log.push_back("w2");
    return ++w2Calls == 3; // done on its third call
  });
  addWrite(client, [&](AsyncFD) {
    log.push_back("w3");
    return true;
  });
  for (int i = 0; i < 3; ++i)
    poll(100);
  CHECK(log == std::vector<std::string>{"w1", "w2", "w2", "w2", "w3"});
  CHECK(activeDescriptors() == 0);
#if defined(_WIN32)
  CHECK(callbacksOf(client) == nullptr);
#else
  CHECK(getIoHandler(getGlobalDispatcher()).fds[static_cast<int>(client)].data.writeCBs.empty());
#endif
  closeSocket(client);
  closeSocket(server);
  checkDispatcherEmpty();
}

TEST_CASE("addWrite: an unregistered descriptor throws ValueError \"File descriptor not "
          "registered.\"") {
  const RawFd raw = rawSocket();
  const std::string message =
      valueErrorOf([&] { addWrite(AsyncFD(raw), [](AsyncFD) { return true; }); });
  CHECK(message.find("File descriptor not registered.") != std::string::npos);
  closeRaw(raw);
  checkDispatcherEmpty();
}

TEST_CASE("activeDescriptors: counts descriptors with an operation waiting, not registered ones") {
  CHECK(activeDescriptors() == 0);
  const AsyncFD idle = createAsyncNativeSocket();
  CHECK(activeDescriptors() == 0);

  Listener l = listenLocal();
  Future<AsyncFD> accepted = accept(l.fd);
  CHECK(activeDescriptors() == 1);

  auto [client, server] = connectedPair();
  Future<std::string> received = recv(server, 1);
  CHECK(activeDescriptors() == 2);
  // A second operation on the same descriptor is the same registration.
  Future<std::string> receivedToo = recv(server, 1);
  CHECK(activeDescriptors() == 2);

  rawSend(client, "ab", 2);
  settle(received);
  settle(receivedToo);
  CHECK(received.read() == "a"); // in the order they were asked
  CHECK(receivedToo.read() == "b");
  CHECK(activeDescriptors() == 1);

  closeSocket(l.fd);
  settle(accepted);
  CHECK(accepted.failed());
  CHECK(activeDescriptors() == 0);

  closeSocket(idle);
  closeSocket(client);
  closeSocket(server);
  runDry();
  checkDispatcherEmpty();
}

TEST_CASE("hasPendingOperations: a registered socket with nothing waiting is not pending; a "
          "pending accept is") {
  const AsyncFD fd = createAsyncNativeSocket();
  CHECK_FALSE(hasPendingOperations());
  bindAddr(fd, Port(0), "127.0.0.1");
  listen(fd);
  CHECK_FALSE(hasPendingOperations());

  Future<AcceptResult> accepted = acceptAddr(fd);
  CHECK(hasPendingOperations());

  const AsyncFD client = waitWithin(dial("127.0.0.1", getLocalAddr(fd).second));
  const AcceptResult result = waitWithin(accepted);
  runDry();
  CHECK_FALSE(hasPendingOperations()); // three idle registered sockets

  closeSocket(result.client);
  closeSocket(client);
  closeSocket(fd);
  checkDispatcherEmpty();
}

#if defined(_WIN32)
[[maybe_unused]] const bool rlimitCasesOut = testsupport::compiledOut(
    "tests/registry.cpp: \"maxDescriptors: is the RLIMIT_NOFILE soft limit minus one\" and "
    "\"setInheritable: clears and sets close-on-exec\"",
    "Windows has no RLIMIT_NOFILE nor FD_CLOEXEC: 2 Windows cases check 16,700,000 (as in Nim) and "
    "HANDLE_FLAG_INHERIT instead");
TEST_CASE("maxDescriptors: is 16,700,000 on Windows, as in Nim") {
  CHECK(maxDescriptors() == 16'700'000);
  checkDispatcherEmpty();
}

TEST_CASE("setInheritable: sets and clears HANDLE_FLAG_INHERIT (Windows' close-on-exec)") {
  const AsyncFD fd = createAsyncNativeSocket();
  REQUIRE_FALSE(inherited(fd));

  CHECK(setInheritable(fd, true));
  CHECK(inherited(fd));
  CHECK(setInheritable(fd, true)); // already inheritable: still a success
  CHECK(inherited(fd));
  CHECK(setInheritable(fd, false));
  CHECK_FALSE(inherited(fd));

  closeSocket(fd);
  // A closed handle: the OS call fails, and setInheritable says so.
  CHECK_FALSE(setInheritable(fd, true));
  checkDispatcherEmpty();
}
#else
[[maybe_unused]] const bool windowsLimitCasesOut = testsupport::compiledOut(
    "tests/registry.cpp: \"maxDescriptors: is 16,700,000 on Windows, as in Nim\" and "
    "\"setInheritable: sets and clears HANDLE_FLAG_INHERIT (Windows' close-on-exec)\"",
    "Windows' limit and handle flag; the cases here check RLIMIT_NOFILE and FD_CLOEXEC instead");
TEST_CASE("maxDescriptors: is the RLIMIT_NOFILE soft limit minus one") {
  RlimitGuard guard;
  CHECK(maxDescriptors() == expectedMaxDescriptors());

  // A lower soft limit is seen at once (read on every call, not cached).
  REQUIRE(guard.saved.rlim_cur > 300);
  rlimit lower = guard.saved;
  lower.rlim_cur = 300;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &lower) == 0);
  CHECK(maxDescriptors() == 299);
  REQUIRE(setrlimit(RLIMIT_NOFILE, &guard.saved) == 0);
  CHECK(maxDescriptors() == expectedMaxDescriptors());
  checkDispatcherEmpty();
}

TEST_CASE("setInheritable: clears and sets close-on-exec") {
  const AsyncFD fd = createAsyncNativeSocket();
  const int raw = static_cast<int>(fd);
  REQUIRE((fcntl(raw, F_GETFD) & FD_CLOEXEC) != 0);

  CHECK(setInheritable(fd, true));
  CHECK((fcntl(raw, F_GETFD) & FD_CLOEXEC) == 0);
  CHECK(setInheritable(fd, true)); // already inheritable: still a success
  CHECK((fcntl(raw, F_GETFD) & FD_CLOEXEC) == 0);
  CHECK(setInheritable(fd, false));
  CHECK((fcntl(raw, F_GETFD) & FD_CLOEXEC) != 0);

  closeSocket(fd);
  // A closed descriptor: the OS call fails, and setInheritable says so.
  CHECK_FALSE(setInheritable(fd, true));
  checkDispatcherEmpty();
}
#endif

TEST_CASE("closeSocket: an unregistered descriptor throws ValueError \"File descriptor not "
          "registered.\"") {
  const RawFd raw = rawSocket();
  const std::string message = valueErrorOf([&] { closeSocket(AsyncFD(raw)); });
  CHECK(message.find("File descriptor not registered.") != std::string::npos);
  CHECK(isOpen(raw)); // not closed by the failed call
  closeRaw(raw);
  checkDispatcherEmpty();
}

TEST_CASE("closeSocket: unregisters and closes the descriptor") {
  const AsyncFD fd = createAsyncNativeSocket();
  closeSocket(fd);
  CHECK_FALSE(contains(getGlobalDispatcher(), fd));
#if defined(_WIN32)
  CHECK_FALSE(isOpen(static_cast<int>(fd)));
#else
  errno = 0;
  CHECK(fcntl(static_cast<int>(fd), F_GETFD) == -1);
  CHECK(errno == EBADF);
#endif
  checkDispatcherEmpty();
}

TEST_CASE("closeSocket: a pending recv and a pending accept each fail once with EBADF, naming the "
          "operation and \"closed\"") {
  auto [client, server] = connectedPair();
  Listener l = listenLocal();
  Future<std::string> received = recv(server, 100);
  Future<AsyncFD> accepted = accept(l.fd);
  int recvCalls = 0;
  int acceptCalls = 0;
  received.addCallback([&] { ++recvCalls; });
  accepted.addCallback([&] { ++acceptCalls; });
  const std::string serverName = fdText(server);
  const std::string listenerName = fdText(l.fd);

  closeSocket(server);
  closeSocket(l.fd);
  settle(received);
  settle(accepted);
  runDry();
  CHECK(recvCalls == 1);
  CHECK(acceptCalls == 1);

  const OSError recvError = osErrorOf(received);
  CHECK(failedByClose(recvError));
  const std::string recvText = recvError.what();
  CHECK(recvText.find("recv(" + serverName + ")") != std::string::npos);
  CHECK(recvText.find("closed") != std::string::npos);

  const OSError acceptError = osErrorOf(accepted);
  CHECK(failedByClose(acceptError));
  const std::string acceptText = acceptError.what();
  CHECK(acceptText.find("accept(" + listenerName + ")") != std::string::npos);
  CHECK(acceptText.find("closed") != std::string::npos);

  closeSocket(client);
  checkDispatcherEmpty();
}

TEST_CASE("closeSocket: a pending send fails once with EBADF, naming send and \"closed\"") {
  auto [client, server] = connectedPair();
  // Small buffers and a peer that does not read: the send cannot finish.
  setSockOptInt(client, SOL_SOCKET, SO_SNDBUF, 4096);
  setSockOptInt(server, SOL_SOCKET, SO_RCVBUF, 4096);
  Future<void> sent = send(client, std::string(8 << 20, 'x'));
  int calls = 0;
  sent.addCallback([&] { ++calls; });
  for (int i = 0; i < 5; ++i)
    poll(10);
  REQUIRE_FALSE(sent.finished());
  const std::string clientName = fdText(client);

  closeSocket(client);
  settle(sent);
  runDry();
  CHECK(calls == 1);
  const OSError error = osErrorOf(sent);
  CHECK(failedByClose(error));
  const std::string text = error.what();
  CHECK(text.find("send(" + clientName + ")") != std::string::npos);
  CHECK(text.find("closed") != std::string::npos);

  closeSocket(server);
  checkDispatcherEmpty();
}

#if defined(_WIN32)
[[maybe_unused]] const bool selectorTableCasesOut = testsupport::compiledOut(
    "tests/registry.cpp: the 2 getIoHandler cases on the selector and its fds table",
    "the IOCP dispatcher has no selector: 2 Windows cases check its completion port and Nim's "
    "Windows layout (ioPort, handles, CustomOverlapped) instead");
TEST_CASE("getIoHandler: gives the dispatcher's own completion port (Windows)") {
  const PDispatcher p = getGlobalDispatcher();
  CHECK(getIoHandler(p) == p->ioPort);
  const PDispatcher other = newDispatcher();
  CHECK(getIoHandler(other) == other->ioPort);
  CHECK(getIoHandler(other) != getIoHandler(p));
  // A real completion port: a packet posted to it comes back out.
  REQUIRE(PostQueuedCompletionStatus(getIoHandler(other), 7, 42, nullptr));
  DWORD bytes = 0;
  ULONG_PTR key = 0;
  OVERLAPPED* ov = nullptr;
  CHECK(GetQueuedCompletionStatus(getIoHandler(other), &bytes, &key, &ov, 0));
  CHECK(bytes == 7);
  CHECK(key == 42);
  checkDispatcherEmpty();
}

TEST_CASE("getIoHandler: the dispatcher mirrors Nim's Windows layout while a recv waits "
          "(Windows)") {
  // Nim's Windows drawing: ioPort, handles, and a CustomOverlapped (an OVERLAPPED followed by its
  // CompletionData{fd, cb}) per operation in flight; checked by the compiler.
  static_assert(std::is_same_v<PDispatcher, std::shared_ptr<Dispatcher>>);
  static_assert(std::is_base_of_v<DispatcherBase, Dispatcher>);
  static_assert(std::is_same_v<decltype(Dispatcher::ioPort), HANDLE>);
  static_assert(std::is_same_v<decltype(Dispatcher::handles), std::unordered_set<AsyncFD>>);
  static_assert(std::is_base_of_v<OVERLAPPED, CustomOverlapped>);
  static_assert(std::is_same_v<decltype(CustomOverlapped::data), CompletionData>);
  static_assert(std::is_same_v<decltype(CompletionData::fd), AsyncFD>);
  static_assert(std::is_same_v<decltype(DispatcherBase::timers), TimerHeap>);
  static_assert(std::is_same_v<decltype(TimerEntry::fut), Future<void>>);

  auto [client, server] = connectedPair();
  const PDispatcher p = getGlobalDispatcher();
  Future<std::string> received = recv(server, 100);
  CHECK(p->handles.contains(server));
  REQUIRE(p->operations.contains(server));
  REQUIRE(p->operations.at(server).size() == 1);
  const Dispatcher::InFlight& op = p->operations.at(server).front();
  CHECK(std::string(op.op) == "recv");
  CHECK(op.ov->data.fd == server);
  CHECK(p->pendingOperations == 1);

  rawSend(client, "hi", 2);
  CHECK(waitWithin(received) == "hi");
  CHECK(p->handles.contains(server)); // still registered, no longer waiting
  CHECK_FALSE(p->operations.contains(server));
  CHECK(p->pendingOperations == 0);

  closeSocket(client);
  closeSocket(server);
  CHECK_FALSE(p->handles.contains(server));
  checkDispatcherEmpty();
}
#else
[[maybe_unused]] const bool completionPortCasesOut = testsupport::compiledOut(
    "tests/registry.cpp: the 2 Windows getIoHandler cases (the completion port, Nim's Windows "
    "layout)",
    "the IOCP dispatcher's; the 2 cases here check the selector and its fds table instead");
TEST_CASE("getIoHandler: gives the dispatcher's own selector") {
  const PDispatcher p = getGlobalDispatcher();
  CHECK(&getIoHandler(p) == &p->selector);
  const PDispatcher other = newDispatcher();
  CHECK(&getIoHandler(other) == &other->selector);
  CHECK(&getIoHandler(other) != &getIoHandler(p));
#if defined(ASYNCDISPATCH_BACKEND_EPOLL)
  // A real epoll instance: epoll_wait accepts it (EINVAL or EBADF otherwise).
  epoll_event ev{};
  CHECK(epoll_wait(getIoHandler(p).epollFD, &ev, 1, 0) >= 0);
  CHECK(epoll_wait(getIoHandler(other).epollFD, &ev, 1, 0) >= 0);
  CHECK(getIoHandler(other).epollFD != getIoHandler(p).epollFD);
  CHECK((fcntl(getIoHandler(p).epollFD, F_GETFD) & FD_CLOEXEC) != 0);
#endif
  checkDispatcherEmpty();
}

TEST_CASE("getIoHandler: the selector's fds table mirrors Nim's drawing while a "
          "recv waits") {
  // The drawing's nesting and field types, checked by the compiler.
  static_assert(std::is_same_v<PDispatcher, std::shared_ptr<Dispatcher>>);
  static_assert(std::is_base_of_v<DispatcherBase, Dispatcher>);
  static_assert(std::is_same_v<decltype(Dispatcher::selector), Selector<PData>>);
  static_assert(std::is_same_v<decltype(DispatcherBase::timers), TimerHeap>);
  static_assert(std::is_same_v<decltype(TimerEntry::fut), Future<void>>);
  static_assert(
      std::is_same_v<decltype(TimerEntry::finishAt), std::chrono::steady_clock::time_point>);
  static_assert(std::is_same_v<decltype(SelectorKey<PData>::fd), SocketHandle>);
  static_assert(std::is_same_v<decltype(SelectorKey<PData>::events), EventSet>);
  static_assert(std::is_same_v<decltype(SelectorKey<PData>::data), PData>);
  static_assert(std::is_same_v<AsyncData, PData>);
  static_assert(std::is_same_v<decltype(PData::fd), AsyncFD>);
  static_assert(std::is_same_v<decltype(PData::readCBs), std::vector<Callback>>);
  static_assert(std::is_same_v<decltype(PData::writeCBs), std::vector<Callback>>);
#if defined(ASYNCDISPATCH_BACKEND_EPOLL)
  static_assert(std::is_same_v<decltype(Selector<PData>::epollFD), int>);
  static_assert(std::is_same_v<decltype(Selector<PData>::events), epoll_event[64]>);
#elif defined(ASYNCDISPATCH_BACKEND_KQUEUE)
  static_assert(std::is_same_v<decltype(Selector<PData>::kqFD), int>);
  static_assert(std::is_same_v<decltype(Selector<PData>::events), struct kevent[64]>);
#endif

  auto [client, server] = connectedPair();
  const int fd = static_cast<int>(server);
  Selector<PData>& selector = getIoHandler(getGlobalDispatcher());
  Future<std::string> received = recv(server, 100);

  const auto& key = selector.fds[fd];
  CHECK(key.fd == fd);
  CHECK(key.events == EventSet(Event::Read));
  CHECK(key.data.fd == server);
  CHECK(key.data.readCBs.size() == 1);
  CHECK(key.data.writeCBs.size() == 0);
#if defined(ASYNCDISPATCH_BACKEND_EPOLL)
  // The kernel holds the registration too: adding it again is refused.
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  CHECK(epoll_ctl(selector.epollFD, EPOLL_CTL_ADD, fd, &ev) == -1);
  CHECK(errno == EEXIST);
#endif

  rawSend(client, "hi", 2);
  CHECK(waitWithin(received) == "hi");
  CHECK(selector.fds[fd].fd == fd); // still registered, no longer waiting
  CHECK(selector.fds[fd].events.empty());
  CHECK(selector.fds[fd].data.readCBs.empty());

  closeSocket(client);
  closeSocket(server);
  CHECK(selector.fds[fd].fd == InvalidIdent);
  checkDispatcherEmpty();
}
#endif
