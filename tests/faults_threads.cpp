// Fault scenarios with other threads (reliability.md §2 and §3): a signal storm sent from another
// thread, triggers racing the close of their AsyncEvent, and several threads each running its
// own dispatcher at once. `make tsan` runs them under ThreadSanitizer.
#if !defined(_WIN32)
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#endif
#if defined(__linux__)
#include <sys/eventfd.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <latch>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

namespace {

#if !defined(_WIN32)
// The descriptor of the one User key the global dispatcher holds (an AsyncEvent's eventfd).
int userKey() {
  for (const auto& key : getIoHandler(getGlobalDispatcher()).fds) {
    if (key.fd != InvalidIdent && key.events.contains(Event::User)) return key.fd;
  }
  return -1;
}
#endif

} // namespace

#if !defined(_WIN32) // signals: addSignal is POSIX only
namespace {

bool blocked(int signal) {
  sigset_t current;
  pthread_sigmask(SIG_BLOCK, nullptr, &current);
  return sigismember(&current, signal) == 1;
}

// Held back from its default action while watched: blocked (epoll, poll), or set to SIG_IGN by
// the kqueue selector, whose EVFILT_SIGNAL needs no mask (see tests/signals.cpp).
bool heldWhileWatched(int signal) {
#if defined(ASYNCDISPATCH_BACKEND_KQUEUE)
  struct sigaction current {};
  sigaction(signal, nullptr, &current);
  return current.sa_handler == SIG_IGN;
#else
  return blocked(signal);
#endif
}

bool pendingHere(int signal) {
  sigset_t pending;
  sigpending(&pending);
  return sigismember(&pending, signal) == 1;
}

// Deliveries that missed the signalfd: a SIGUSR1 that some thread did not block runs this handler
// instead of the default action (which would end the suite), and the test sees it counted. It
// touches nothing but a lock-free atomic, so it is async-signal-safe and leaves errno alone.
std::atomic<int> strays{0};
extern "C" void countStray(int) {
  strays.fetch_add(1, std::memory_order_relaxed);
}

// Installs countStray for SIGUSR1 and puts the old action back afterwards.
struct StrayCounter {
  struct sigaction saved {};
  StrayCounter() {
    struct sigaction action {};
    action.sa_handler = countStray;
    sigemptyset(&action.sa_mask);
    REQUIRE(sigaction(SIGUSR1, &action, &saved) == 0);
    strays = 0;
  }
  StrayCounter(const StrayCounter&) = delete;
  StrayCounter& operator=(const StrayCounter&) = delete;
  ~StrayCounter() { sigaction(SIGUSR1, &saved, nullptr); }
};

// The descriptor of the global dispatcher's Signal key, or -1.
int signalKey() {
  for (const auto& key : getIoHandler(getGlobalDispatcher()).fds) {
    if (key.fd != InvalidIdent && key.events.contains(Event::Signal)) return key.fd;
  }
  return -1;
}

} // namespace

// reliability.md F9 and §3 #29: 100,000 SIGUSR1 from another thread, in bursts of 100, half sent
// to the process (kill) and half to the dispatcher's thread (pthread_kill). The sender waits
// after each burst for the callback to have run, so a lost wake-up stalls the exchange and fails
// the count instead of passing unnoticed. Standard signals coalesce, so a burst may be one call.
// No signal may reach a thread by another way than the signalfd, and at the end the handler is
// gone and the mask is what it was.
TEST_CASE("addSignal: a storm of 100,000 signals from another thread reaches the callback after "
          "every burst, and the mask is restored") {
  constexpr int kBursts = 1000;
  constexpr int kPerBurst = 100;
  REQUIRE_FALSE(blocked(SIGUSR1));
  StrayCounter stray;
  std::atomic<int> calls{0};
  addSignal(SIGUSR1, [&](AsyncFD) {
    calls.fetch_add(1, std::memory_order_release);
    return false;
  });
  REQUIRE(heldWhileWatched(SIGUSR1));
  const int key = signalKey();
  const pthread_t dispatcherThread = pthread_self();
  std::atomic<int> bursts{0};
  std::atomic<bool> stalled{false};
  JoiningThread sender([&](const StopToken& stop) {
    // A process-directed signal goes to any thread that does not block it (README, signals):
    // this one must not be that thread.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    for (int burst = 0; burst < kBursts && !stop.stop_requested(); ++burst) {
      const int before = calls.load(std::memory_order_acquire);
      for (int i = 0; i < kPerBurst; ++i) {
        if (burst % 2 == 0) {
          kill(getpid(), SIGUSR1);
        } else {
          pthread_kill(dispatcherThread, SIGUSR1);
        }
      }
      const Clock::time_point start = Clock::now();
      while (calls.load(std::memory_order_acquire) == before && !stop.stop_requested()) {
        if (msSince(start) > 5000) {
          stalled = true;
          return;
        }
        std::this_thread::yield();
      }
      bursts.fetch_add(1, std::memory_order_release);
    }
  });
  const Clock::time_point start = Clock::now();
  while (bursts.load(std::memory_order_acquire) < kBursts && !stalled && msSince(start) < 30000)
    poll(100);
  sender.join();
  // The sender is gone: whatever it sent is pending now, and the last passes read it, so none
  // is left to arrive once the signal is unblocked.
  while (pendingHere(SIGUSR1) && msSince(start) < 30000)
    poll(10);
  CHECK_FALSE(stalled);
  CHECK(bursts == kBursts);
  CHECK(calls >= kBursts);
  CHECK(calls <= kBursts * kPerBurst);
  unregister(AsyncFD(key));
  CHECK_FALSE(blocked(SIGUSR1));
  CHECK_FALSE(isOpen(key));
  CHECK(strays == 0);
  checkDispatcherEmpty();
}
#else
[[maybe_unused]] const bool signalStormCaseOut = testsupport::compiledOut(
    "tests/faults_threads.cpp: \"addSignal: a storm of 100,000 signals from another thread reaches "
    "the callback after every burst, and the mask is restored\"",
    "Windows has no POSIX signals");
#endif

// reliability.md F20 and §3 #35 (libuv PR #2231): threads trigger an event in a loop while the
// dispatcher's thread unregisters and closes it, round after round. A trigger either lands before
// the close or throws ValueError("trigger: the AsyncEvent is closed"): never another error (a
// write to a closed descriptor fails with EBADF), and never a write into the descriptor that
// takes the closed one's number, which the test puts there at once.
TEST_CASE("trigger: racing close from other threads either lands before the close or throws "
          "ValueError, and never reaches the next owner of the descriptor") {
  constexpr int kRounds = 100;
  constexpr int kThreads = 2;
  int refused = 0;
  int otherErrors = 0;
  int strayWrites = 0;
  int called = 0;
  std::string otherError;
  for (int round = 0; round < kRounds; ++round) {
    AsyncEvent ev = newAsyncEvent();
    addEvent(ev, [&](AsyncFD) {
      ++called;
      return false;
    });
#if !defined(_WIN32)
    const int number = userKey();
    REQUIRE(number >= 0);
#endif
    std::atomic<int> landed{0};
    std::atomic<int> roundRefused{0};
    std::atomic<int> roundOther{0};
    std::vector<std::string> errors(kThreads);
    // Joined however the round ends, after being told to stop if it ends early.
    std::vector<JoiningThread> triggers;
    for (int t = 0; t < kThreads; ++t) {
      triggers.emplace_back([&, t](const StopToken& stop) {
        while (!stop.stop_requested()) {
          try {
            trigger(ev);
            landed.fetch_add(1, std::memory_order_relaxed);
          } catch (const ValueError& e) {
            if (std::string(e.what()) == "trigger: the AsyncEvent is closed") {
              roundRefused.fetch_add(1);
            } else {
              errors[t] = e.what();
              roundOther.fetch_add(1);
            }
            return;
          } catch (const std::exception& e) {
            errors[t] = e.what();
            roundOther.fetch_add(1);
            return;
          }
        }
      });
    }
    while (landed.load(std::memory_order_relaxed) < kThreads)
      std::this_thread::yield();
    poll(0);
    if (round % 2 == 0) unregister(ev); // else close unregisters it
    close(ev);
#if !defined(_WIN32)
    // The next descriptor made here takes the closed number, and a stray 8-byte write into it
    // would go through and show: an eventfd on Linux; elsewhere one end of a socket pair, whose
    // other end (`reader`) receives what was written. No trigger may write into it.
#if defined(__linux__)
    int probe = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
#else
    int ends[2] = {-1, -1};
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, ends) == 0);
    int probe = ends[0];
    REQUIRE(::fcntl(ends[1], F_SETFL, ::fcntl(ends[1], F_GETFL) | O_NONBLOCK) == 0);
#endif
    if (probe >= 0 && probe != number) {
      const int placed = fcntl(probe, F_DUPFD_CLOEXEC, number);
      ::close(probe);
      probe = placed;
    }
#if defined(__linux__)
    const int reader = probe;
#else
    const int reader = ends[1];
#endif
#endif
    for (JoiningThread& t : triggers)
      t.join();
#if !defined(_WIN32)
    CHECK(probe == number);
    std::uint64_t value = 0;
    if (::read(reader, &value, sizeof value) == static_cast<ssize_t>(sizeof value)) ++strayWrites;
    if (probe >= 0) ::close(probe);
    if (reader != probe) ::close(reader);
#endif
    refused += roundRefused;
    otherErrors += roundOther;
    for (const std::string& e : errors) {
      if (!e.empty() && otherError.empty()) otherError = e;
    }
  }
  CHECK(refused == kRounds * kThreads); // every thread ended on the closed event
  CHECK_MESSAGE(otherErrors == 0, otherError);
  CHECK(strayWrites == 0);
  CHECK(called >= 1);
  checkDispatcherEmpty();
}

namespace {

// Reads until n bytes arrived or the peer closed.
Future<std::string> readExactly(AsyncFD fd, std::size_t n) {
  std::string out;
  while (out.size() < n) {
    std::string piece =
        co_await recv(fd, static_cast<int>(std::min<std::size_t>(n - out.size(), 65536)));
    if (piece.empty()) break;
    out += piece;
  }
  co_return out;
}

Future<void> echo(AsyncFD fd) {
  for (;;) {
    std::string data = co_await recv(fd, 65536);
    if (data.empty()) break;
    co_await send(fd, std::move(data));
  }
  closeSocket(fd);
}

Future<void> serveEcho(AsyncFD listener, int clients) {
  std::vector<Future<void>> sessions;
  for (int i = 0; i < clients; ++i)
    sessions.push_back(echo(co_await accept(listener)));
  closeSocket(listener);
  co_await all(sessions);
}

// Messages tagged with the thread and the round, large enough (16 KiB and more) that a recv
// buffer shared by two threads by mistake would mix them; returns how many came back intact.
Future<int> talk(Port port, int world, int rounds) {
  const AsyncFD fd = co_await dial("127.0.0.1", port);
  std::mt19937 random(static_cast<std::uint32_t>(world));
  int intact = 0;
  for (int round = 0; round < rounds; ++round) {
    std::string message(16 * 1024 + round % 4096, '\0');
    for (char& c : message)
      c = static_cast<char>(random());
    co_await send(fd, message);
    if (co_await readExactly(fd, message.size()) == message) ++intact;
  }
  closeSocket(fd);
  co_return intact;
}

// What one thread's dispatcher did, checked by the main thread once the thread has ended.
struct World {
  const Dispatcher* dispatcher = nullptr;
  int intact = 0;
  int timersFired = 0;
  int timersEarly = 0;
  int callSoons = 0;
  bool emptyAtEnd = false;
  std::string error;
};

constexpr int kRounds = 100;      // echo round trips per connection, two connections per thread
constexpr int kTimers = 500;      // sleepAsync timers per thread, up to 20 ms
constexpr int kCallSoons = 20000; // callSoon chain per thread

// Everything a server thread does: an echo server and two clients over loopback, timers and a
// callSoon chain, all on the thread's own dispatcher, until nothing is pending. It starts once
// every thread has its dispatcher, so that all are alive at once and their addresses tell them
// apart.
void runWorld(int id, World& w, std::latch& started) {
  try {
    w.dispatcher = getGlobalDispatcher().get();
  } catch (const std::exception& e) {
    w.error = e.what();
  }
  started.arrive_and_wait();
  if (!w.error.empty()) return;
  try {
    Listener l = listenLocal();
    Future<void> serving = serveEcho(l.fd, 2);
    Future<std::vector<int>> talking = all(
        std::vector<Future<int>>{talk(l.port, id * 2, kRounds), talk(l.port, id * 2 + 1, kRounds)});
    std::mt19937 random(static_cast<std::uint32_t>(100 + id));
    std::uniform_int_distribution<int> delayMs(0, 20);
    for (int i = 0; i < kTimers; ++i) {
      const int ms = delayMs(random);
      const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(ms);
      sleepAsync(ms).addCallback([&w, deadline] {
        if (Clock::now() < deadline) ++w.timersEarly;
        ++w.timersFired;
      });
    }
    std::function<void()> step = [&w, &step] {
      if (++w.callSoons < kCallSoons) callSoon(step);
    };
    callSoon(step);
    const Clock::time_point start = Clock::now();
    while (hasPendingOperations() && msSince(start) < 20000)
      poll(100);
    if (talking.finished() && !talking.failed()) {
      for (int intact : talking.read())
        w.intact += intact;
    }
    if (serving.failed()) std::rethrow_exception(serving.readError());
    if (talking.failed()) std::rethrow_exception(talking.readError());
    const PDispatcher p = getGlobalDispatcher();
    w.emptyAtEnd = registeredDescriptors(p) == 0 && p->timers.empty() && p->callbacks.empty() &&
                   !hasPendingOperations();
  } catch (const std::exception& e) {
    w.error = e.what();
  }
}

} // namespace

// reliability.md §1 (one loop per thread) and DESIGN §5 Threads: four threads each run their own
// dispatcher at the same time, with sockets, timers and callSoon. Each sees only its own work,
// all of it, and ends empty; the main thread's dispatcher sees none of it. Under `make tsan`
// any state shared by mistake (a buffer, a counter, a table that should be per thread) is a
// reported race; natively, mixed-up messages or counts fail the checks.
TEST_CASE("getGlobalDispatcher: four threads each running its own dispatcher with sockets, "
          "timers and callSoon share nothing") {
  constexpr int kWorlds = 4;
  const Dispatcher* mine = getGlobalDispatcher().get();
  std::vector<World> worlds(kWorlds);
  std::latch started(kWorlds);
  std::vector<JoiningThread> threads;
  for (int id = 0; id < kWorlds; ++id)
    threads.emplace_back([id, &worlds, &started] { runWorld(id, worlds[id], started); });
  for (JoiningThread& t : threads)
    t.join();
  for (int id = 0; id < kWorlds; ++id) {
    const World& w = worlds[id];
    CAPTURE(id);
    CHECK_MESSAGE(w.error.empty(), w.error);
    CHECK(w.dispatcher != nullptr);
    CHECK(w.dispatcher != mine);
    for (int other = 0; other < id; ++other)
      CHECK(w.dispatcher != worlds[other].dispatcher);
    CHECK(w.intact == 2 * kRounds);
    CHECK(w.timersFired == kTimers);
    CHECK(w.timersEarly == 0);
    CHECK(w.callSoons == kCallSoons);
    CHECK(w.emptyAtEnd);
  }
  checkDispatcherEmpty();
}
