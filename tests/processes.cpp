// addProcess: child exits reported through the selector, with pidfd on Linux or, when
// ASYNCDISPATCH_NO_PIDFD=1 is set (`make test-nopidfd`), with the SIGCHLD fallback. Every case
// here is named addProcess* so that target runs them all. Windows has no fork(): there the child
// is this test executable itself, started with CreateProcess and arguments that tests/main.cpp
// recognises, and each case has a Windows counterpart (the first half of this file).
#if !defined(_WIN32)
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#endif

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

#if defined(_WIN32)
[[maybe_unused]] const bool forkCasesOut = testsupport::compiledOut(
    "tests/processes.cpp: the 9 addProcess cases on fork, waitpid, pidfd and SIGCHLD",
    "Windows has no fork(): each has a Windows counterpart that starts tests.exe itself as the "
    "child");
namespace {

// A named event whose setting releases the children waiting on it, so they exit when the test
// says (the POSIX cases' pipe).
struct Gate {
  std::string name;
  HANDLE event = nullptr;
  Gate() {
    static int made = 0;
    name = "asyncdispatch-tests-gate-" + std::to_string(GetCurrentProcessId()) + "-" +
           std::to_string(++made);
    event = CreateEventA(nullptr, TRUE, FALSE, name.c_str());
    REQUIRE(event != nullptr);
  }
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;
  ~Gate() {
    open();
    CloseHandle(event);
  }
  void open() { SetEvent(event); }
};

// A child process: its pid, and the test's own handle, which keeps its exit code readable (what a
// zombie is on POSIX) until reap() closes it.
struct Child {
  int pid = 0;
  HANDLE process = nullptr;
};

// Starts this executable as a child that exits with `code`, after the gate opens when there is
// one (tests/main.cpp). It inherits no handle.
Child spawn(int code, const Gate* gate = nullptr) {
  char path[MAX_PATH];
  const DWORD length = GetModuleFileNameA(nullptr, path, MAX_PATH);
  REQUIRE((length > 0 && length < MAX_PATH));
  std::string command = "\"" + std::string(path) + "\" --child-exit=" + std::to_string(code);
  if (gate != nullptr) command += " --child-gate=" + gate->name;
  STARTUPINFOA startup{};
  startup.cb = sizeof startup;
  PROCESS_INFORMATION info{};
  REQUIRE(CreateProcessA(nullptr, command.data(), nullptr, nullptr, FALSE, 0, nullptr, nullptr,
                         &startup, &info));
  CloseHandle(info.hThread);
  return Child{static_cast<int>(info.dwProcessId), info.hProcess};
}

// Waits (without the dispatcher) until the child has exited.
void awaitExit(const Child& child) {
  REQUIRE(WaitForSingleObject(child.process, 10000) == WAIT_OBJECT_0);
}

// The child's exit code, read through the test's handle (STILL_ACTIVE while it runs).
int exitCodeOf(const Child& child) {
  DWORD code = 0;
  REQUIRE(GetExitCodeProcess(child.process, &code));
  return static_cast<int>(code);
}

// Waits for the child and closes the test's handle (POSIX's waitpid): its exit code, or -1.
int reap(Child& child) {
  if (child.process == nullptr) return -1;
  const bool exited = WaitForSingleObject(child.process, 10000) == WAIT_OBJECT_0;
  const int code = exited ? exitCodeOf(child) : -1;
  CloseHandle(child.process);
  child.process = nullptr;
  return code;
}

// The handle of the global dispatcher's Process key, or nullptr.
HANDLE processKey() {
  for (const auto& [fd, key] : getGlobalDispatcher()->waits) {
    if (key.events.contains(Event::Process))
      return reinterpret_cast<HANDLE>(static_cast<std::intptr_t>(fd));
  }
  return nullptr;
}

// How many handles this process holds (the POSIX cases count descriptors in /proc/self/fd).
int openHandles() {
  DWORD count = 0;
  REQUIRE(GetProcessHandleCount(GetCurrentProcess(), &count));
  return static_cast<int>(count);
}

} // namespace

TEST_CASE("addProcess: a child exiting with code 3 calls the callback once, and its exit code is "
          "3 (Windows)") {
  Gate gate;
  Child child = spawn(3, &gate);
  int calls = 0;
  int code = -1;
  addProcess(child.pid, [&](AsyncFD) {
    ++calls;
    code = exitCodeOf(child);
    return false; // ignored: a process key fires once
  });
  CHECK(activeDescriptors() == 1);
  CHECK(hasPendingOperations());
  gate.open();
  pollUntil([&] { return calls > 0; }, 10000);
  CHECK(calls == 1);
  CHECK(code == 3);
  CHECK(processKey() == nullptr);
  CHECK_FALSE(hasPendingOperations());
  drain(20);
  CHECK(calls == 1);
  reap(child);
  checkDispatcherEmpty();
}

namespace {

int exitCalls = 0;

// A plain function as the callback: Callback takes any callable, as std::function does.
bool countExit(AsyncFD) {
  ++exitCalls;
  return true;
}

} // namespace

TEST_CASE("addProcess: takes a function's name as the callback (Windows)") {
  Child child = spawn(0);
  exitCalls = 0;
  addProcess(child.pid, countExit);
  pollUntil([] { return exitCalls > 0; }, 10000);
  CHECK(exitCalls == 1);
  reap(child);
  checkDispatcherEmpty();
}

TEST_CASE("addProcess: a child that exited before the call still calls the callback (Windows)") {
  Child child = spawn(7);
  awaitExit(child);
  int calls = 0;
  int code = -1;
  addProcess(child.pid, [&](AsyncFD) {
    ++calls;
    code = exitCodeOf(child);
    return true;
  });
  pollUntil([&] { return calls > 0; }, 10000);
  CHECK(calls == 1);
  CHECK(code == 7);
  reap(child);
  checkDispatcherEmpty();
}

// Fewer than the POSIX case's 200: under Wine each child is a whole Wine process.
TEST_CASE("addProcess: 50 children exiting at once each call their callback once (Windows)") {
  constexpr int kChildren = 50;
  Gate gate;
  std::vector<Child> children;
  std::vector<int> calls(kChildren, 0);
  std::vector<int> codes(kChildren, -1);
  int total = 0;
  for (int i = 0; i < kChildren; ++i) {
    children.push_back(spawn(i % 100, &gate));
    addProcess(children.back().pid, [&, i](AsyncFD) {
      ++calls[i];
      ++total;
      codes[i] = exitCodeOf(children[i]);
      return true;
    });
  }
  CHECK(activeDescriptors() == kChildren);
  gate.open();
  pollUntil([&] { return total >= kChildren; }, 30000);
  drain(20);
  CHECK(total == kChildren);
  int wrong = 0;
  for (int i = 0; i < kChildren; ++i)
    wrong += calls[i] == 1 && codes[i] == i % 100 ? 0 : 1;
  CHECK(wrong == 0);
  for (Child& child : children)
    reap(child);
  checkDispatcherEmpty();
}

TEST_CASE("addProcess: the library closes only its own handle: the exit code stays readable "
          "through the program's (Windows)") {
  Child child = spawn(5);
  int calls = 0;
  HANDLE key = nullptr;
  addProcess(child.pid, [&](AsyncFD fd) {
    key = reinterpret_cast<HANDLE>(static_cast<std::intptr_t>(fd));
    return ++calls > 0;
  });
  pollUntil([&] { return calls > 0; }, 10000);
  CHECK(calls == 1);
  REQUIRE(key != nullptr);
  CHECK(key != child.process);
  CHECK_FALSE(isOpen(static_cast<int>(reinterpret_cast<std::intptr_t>(key))));
  CHECK(exitCodeOf(child) == 5);
  CHECK(reap(child) == 5);
  checkDispatcherEmpty();
}

TEST_CASE("addProcess: a pid that is no process is refused, naming addProcess and the pid "
          "(Windows)") {
  for (const int pid : {0, -1}) {
    CHECK_THROWS_WITH_AS(addProcess(pid, [](AsyncFD) { return true; }),
                         ("addProcess(pid " + std::to_string(pid) + "): not a process id").c_str(),
                         ValueError);
  }
  const int pid = 0x7ffffffc; // a multiple of 4 like every Windows pid, far beyond any in use
  try {
    addProcess(pid, [](AsyncFD) { return true; });
    FAIL_CHECK("addProcess(pid " << pid << ") was accepted");
  } catch (const OSError& e) {
    CHECK(std::string(e.what()).rfind("addProcess(pid " + std::to_string(pid) + "): ", 0) == 0);
  }
  CHECK_FALSE(hasPendingOperations());
  checkDispatcherEmpty();
}

TEST_CASE("addProcess: the key is a handle of the child process (Windows)") {
  Gate gate;
  Child child = spawn(0, &gate);
  bool called = false;
  addProcess(child.pid, [&](AsyncFD) { return called = true; });
  const HANDLE key = processKey();
  REQUIRE(key != nullptr);
  CHECK(GetProcessId(key) == static_cast<DWORD>(child.pid));
  CHECK(getGlobalDispatcher()->waits.begin()->second.param == child.pid);
  // Beyond Nim, the callback can read the exit code from the handle it gets, as POSIX's waitpid.
  DWORD code = 1;
  addProcess(child.pid, [&](AsyncFD fd) {
    GetExitCodeProcess(reinterpret_cast<HANDLE>(static_cast<std::intptr_t>(fd)), &code);
    return true;
  });
  gate.open();
  pollUntil([&] { return called && code != 1; }, 10000);
  CHECK(called);
  CHECK(code == 0);
  reap(child);
  checkDispatcherEmpty();
}

TEST_CASE("addProcess: a dispatcher destroyed while it waits for a child closes its key "
          "(Windows)") {
  Gate gate;
  Child child = spawn(0, &gate);
  const PDispatcher global = getGlobalDispatcher();
  HANDLE key = nullptr;
  {
    PDispatcher other = newDispatcher();
    setGlobalDispatcher(other);
    addProcess(child.pid, [](AsyncFD) { return true; });
    key = processKey();
    setGlobalDispatcher(global);
  }
  REQUIRE(key != nullptr);
  CHECK_FALSE(isOpen(static_cast<int>(reinterpret_cast<std::intptr_t>(key))));
  gate.open();
  CHECK(reap(child) == 0);
  checkDispatcherEmpty();
}

TEST_CASE("addProcess: no handle outlives its key, with timers and events alongside and after "
          "misuse (Windows)") {
  Child child = spawn(0);
  const int before = openHandles();
  int fired = 0;
  const auto count = [&fired](AsyncFD) { return ++fired > 0; };
  addProcess(child.pid, count);
  addTimer(1, true, count);
  AsyncEvent ev = newAsyncEvent();
  addEvent(ev, count);
  CHECK_THROWS_AS(addSignal(2, count), OSError); // Windows has no POSIX signals
  CHECK_THROWS_AS(addTimer(0, false, count), ValueError);
  CHECK_THROWS_AS(addProcess(-1, count), ValueError);
  CHECK_THROWS_AS(addEvent(ev, count), ValueError);
  CHECK(activeDescriptors() == 3);
  trigger(ev);
  pollUntil([&] { return fired == 3; }, 10000);
  CHECK(fired == 3);
  close(ev);
  CHECK(openHandles() == before);
  reap(child);
  checkDispatcherEmpty();
}

#else // fork(), waitpid, pidfd and SIGCHLD: Windows has its counterparts of these cases above
[[maybe_unused]] const bool createProcessCasesOut = testsupport::compiledOut(
    "tests/processes.cpp: the 9 Windows addProcess cases (children started with CreateProcess)",
    "the 9 cases here fork their children instead");
namespace {

// A pipe whose closing releases the children waiting on it, so they exit when the test says.
struct Gate {
  int fds[2] = {-1, -1};
  Gate() { REQUIRE(cloexecPipe(fds) == 0); }
  ~Gate() {
    open();
    if (fds[0] >= 0) ::close(fds[0]);
  }
  void open() {
    if (fds[1] >= 0) ::close(fds[1]);
    fds[1] = -1;
  }
};

// Forks a child that exits with `code`, after the gate opens when there is one. The child only
// makes async-signal-safe calls.
pid_t spawn(int code, const Gate* gate = nullptr) {
  // Flushed first: a sanitizer's _exit flushes stdio, which would print the parent's output twice.
  std::fflush(nullptr);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (gate != nullptr) {
      ::close(gate->fds[1]);
      char c;
      while (::read(gate->fds[0], &c, 1) != 0 && errno == EINTR) {
      }
    }
    _exit(code);
  }
  return pid;
}

// Waits (without reaping) until pid has exited.
void awaitExit(pid_t pid) {
  siginfo_t info{};
  while (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR) {
  }
}

// Reaps whatever a failed check left behind, so no zombie spills into the next test.
void reapAll() {
  while (waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

bool sigchldBlocked() {
  sigset_t current;
  pthread_sigmask(SIG_BLOCK, nullptr, &current);
  return sigismember(&current, SIGCHLD) == 1;
}

[[maybe_unused]] bool fallback() {
  const char* value = std::getenv("ASYNCDISPATCH_NO_PIDFD");
  if (value != nullptr && *value != '\0' && std::string(value) != "0") return true;
#if defined(__linux__) && defined(SYS_pidfd_open)
  // The selector also falls back where pidfd_open is missing (old kernels, valgrind 3.19).
  const long fd = ::syscall(SYS_pidfd_open, ::getpid(), 0);
  if (fd >= 0) ::close(static_cast<int>(fd));
  return fd < 0 && (errno == ENOSYS || errno == EPERM);
#else
  return true; // no pidfd outside Linux
#endif
}

// What kind of file fd is: "anon_inode:[pidfd]", "anon_inode:[eventfd]", "/dev/null" ... from
// /proc/self/fd on Linux; elsewhere only "/dev/null" is told apart (by device and inode).
std::string fileKind(int fd) {
#if defined(__linux__)
  char target[256] = {};
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
  return n > 0 ? std::string(target, static_cast<std::size_t>(n)) : std::string();
#else
  struct stat file {};
  struct stat null {};
  if (::fstat(fd, &file) != 0 || ::stat("/dev/null", &null) != 0) return {};
  return file.st_dev == null.st_dev && file.st_ino == null.st_ino ? "/dev/null" : "(other)";
#endif
}

// How many descriptors this process has open (testsupport::openDescriptors).
int openDescriptorCount() {
  return static_cast<int>(openDescriptors().size());
}

int processKey() {
  for (const auto& key : getIoHandler(getGlobalDispatcher()).fds) {
    if (key.fd != InvalidIdent && key.events.contains(Event::Process)) return key.fd;
  }
  return -1;
}

} // namespace

TEST_CASE("addProcess: a child exiting with code 3 calls the callback once, and waitpid in it "
          "gets 3") {
  Gate gate;
  const pid_t pid = spawn(3, &gate);
  int calls = 0;
  int status = -1;
  pid_t reaped = 0;
  addProcess(pid, [&](AsyncFD) {
    ++calls;
    reaped = waitpid(pid, &status, 0);
    return false; // ignored: a process key fires once
  });
  CHECK(activeDescriptors() == 1);
  CHECK(hasPendingOperations());
  gate.open();
  pollUntil([&] { return calls > 0; });
  CHECK(calls == 1);
  CHECK(reaped == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 3);
  CHECK(processKey() == -1);
  CHECK_FALSE(hasPendingOperations());
  CHECK_FALSE(sigchldBlocked());
  reapAll();
  checkDispatcherEmpty();
}

namespace {

int exitCalls = 0;

// A plain function as the callback: Callback takes any callable, as std::function does.
bool countExit(AsyncFD) {
  ++exitCalls;
  return true;
}

} // namespace

TEST_CASE("addProcess: takes a function's name as the callback") {
  const pid_t pid = spawn(0);
  exitCalls = 0;
  addProcess(pid, countExit);
  pollUntil([] { return exitCalls > 0; });
  CHECK(exitCalls == 1);
  reapAll();
  checkDispatcherEmpty();
}

TEST_CASE("addProcess: a child that exited before the call still calls the callback") {
  const pid_t pid = spawn(7);
  awaitExit(pid);
  int calls = 0;
  int status = -1;
  addProcess(pid, [&](AsyncFD) {
    ++calls;
    waitpid(pid, &status, 0);
    return true;
  });
  pollUntil([&] { return calls > 0; });
  CHECK(calls == 1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 7);
  reapAll();
  checkDispatcherEmpty();
}

TEST_CASE("addProcess: 200 children exiting at once each call their callback once") {
  constexpr int kChildren = 200;
  Gate gate;
  std::vector<pid_t> pids;
  std::vector<int> calls(kChildren, 0);
  std::vector<int> codes(kChildren, -1);
  int total = 0;
  for (int i = 0; i < kChildren; ++i) {
    pids.push_back(spawn(i % 100, &gate));
    addProcess(pids.back(), [&, i](AsyncFD) {
      ++calls[i];
      ++total;
      int status = 0;
      if (waitpid(pids[i], &status, 0) == pids[i] && WIFEXITED(status))
        codes[i] = WEXITSTATUS(status);
      return true;
    });
  }
  CHECK(activeDescriptors() == kChildren);
  gate.open();
  pollUntil([&] { return total >= kChildren; }, 15000);
  drain(20);
  CHECK(total == kChildren);
  int wrong = 0;
  for (int i = 0; i < kChildren; ++i)
    wrong += calls[i] == 1 && codes[i] == i % 100 ? 0 : 1;
  CHECK(wrong == 0);
  CHECK_FALSE(sigchldBlocked());
  reapAll();
  checkDispatcherEmpty();
}

TEST_CASE("addProcess: the library never reaps: the exit status waits for the program's waitpid") {
  const pid_t pid = spawn(5);
  int calls = 0;
  addProcess(pid, [&](AsyncFD) { return ++calls > 0; });
  pollUntil([&] { return calls > 0; });
  CHECK(calls == 1);
  int status = -1;
  CHECK(waitpid(pid, &status, WNOHANG) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 5);
  reapAll();
  checkDispatcherEmpty();
}

TEST_CASE("addProcess: a pid that is not a child is refused, naming addProcess and the pid") {
  for (const int pid : {0, -1}) {
    CHECK_THROWS_WITH_AS(addProcess(pid, [](AsyncFD) { return true; }),
                         ("addProcess(pid " + std::to_string(pid) + "): not a process id").c_str(),
                         ValueError);
  }
  const pid_t gone = spawn(0);
  REQUIRE(waitpid(gone, nullptr, 0) == gone); // reaped: no longer a child
  for (const int pid : {1, static_cast<int>(getpid()), static_cast<int>(gone)}) {
    try {
      addProcess(pid, [](AsyncFD) { return true; });
      FAIL_CHECK("addProcess(pid " << pid << ") was accepted");
    } catch (const OSError& e) {
      CHECK(e.code().value() == ECHILD);
      CHECK(std::string(e.what()) ==
            "addProcess(pid " + std::to_string(pid) + "): not a child of this process");
    }
  }
  CHECK_FALSE(hasPendingOperations());
  CHECK_FALSE(sigchldBlocked());
  checkDispatcherEmpty();
}

TEST_CASE("addProcess: the key is a pidfd, or an eventfd woken by SIGCHLD with "
          "ASYNCDISPATCH_NO_PIDFD=1 (poll, event ports: a reserved descriptor woken by SIGCHLD; "
          "kqueue: a reserved descriptor with EVFILT_PROC)") {
  Gate gate;
  const pid_t pid = spawn(0, &gate);
  bool called = false;
  addProcess(pid, [&](AsyncFD) { return called = true; });
  const int key = processKey();
  REQUIRE(key >= 0);
#if defined(ASYNCDISPATCH_BACKEND_POLL) || defined(ASYNCDISPATCH_BACKEND_EVENTPORTS)
  // No process filter: a descriptor reserved to name the key.
  CHECK(fileKind(key) == "/dev/null");
  CHECK(sigchldBlocked()); // until the last child waited for has exited
#elif defined(ASYNCDISPATCH_BACKEND_KQUEUE)
  // EVFILT_PROC, named by a reserved descriptor; no SIGCHLD.
  CHECK(fileKind(key) == "/dev/null");
  CHECK_FALSE(sigchldBlocked());
#else // Linux's pidfd, or the eventfd of the SIGCHLD fallback
  if (fallback()) {
    CHECK(fileKind(key) == "anon_inode:[eventfd]");
    CHECK(sigchldBlocked()); // until the last child waited for has exited
  } else {
    CHECK(fileKind(key) == "anon_inode:[pidfd]");
    CHECK_FALSE(sigchldBlocked());
  }
#endif
  gate.open();
  pollUntil([&] { return called; });
  CHECK(called);
  CHECK_FALSE(sigchldBlocked());
  reapAll();
  checkDispatcherEmpty();
}

TEST_CASE("addProcess: a dispatcher destroyed while it waits for a child closes its key") {
  Gate gate;
  const pid_t pid = spawn(0, &gate);
  const PDispatcher global = getGlobalDispatcher();
  int key = -1;
  {
    PDispatcher other = newDispatcher();
    setGlobalDispatcher(other);
    addProcess(pid, [](AsyncFD) { return true; });
    key = processKey();
    setGlobalDispatcher(global);
  }
  REQUIRE(key >= 0);
  CHECK((fcntl(key, F_GETFD) < 0 && errno == EBADF));
  CHECK_FALSE(sigchldBlocked());
  gate.open();
  CHECK(waitpid(pid, nullptr, 0) == pid);
  checkDispatcherEmpty();
}

TEST_CASE("addProcess: no descriptor outlives its key, with timers, signals and events alongside "
          "and after misuse") {
  const int before = openDescriptorCount();
  int fired = 0;
  const auto count = [&fired](AsyncFD) { return ++fired > 0; };
  const pid_t pid = spawn(0);
  addProcess(pid, count);
  addTimer(1, true, count);
  addSignal(SIGUSR1, count);
  AsyncEvent ev = newAsyncEvent();
  addEvent(ev, count);
  CHECK_THROWS_AS(addSignal(SIGUSR1, count), ValueError);
  CHECK_THROWS_AS(addSignal(0, count), ValueError);
  CHECK_THROWS_AS(addTimer(0, false, count), ValueError);
  CHECK_THROWS_AS(addProcess(-1, count), ValueError);
  CHECK_THROWS_AS(addProcess(1, count), OSError);
  CHECK_THROWS_AS(addEvent(ev, count), ValueError);
  CHECK(activeDescriptors() == 4);
  REQUIRE(raise(SIGUSR1) == 0);
  trigger(ev);
  pollUntil([&] { return fired == 4; });
  CHECK(fired == 4);
  close(ev);
  CHECK(waitpid(pid, nullptr, 0) == pid);
  CHECK(openDescriptorCount() == before);
  reapAll();
  checkDispatcherEmpty();
}
#endif
