// addTimer: the kernel timers of the selector (timerfd on Linux), periodic and oneshot, their
// place in the counters and the dump, misuse, and their descriptors' lifetime. On Windows each is
// a waitable timer handle that a thread-pool wait watches.
#if !defined(_WIN32)
#include <fcntl.h>
#endif

#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

namespace {} // namespace

TEST_CASE("addTimer: a periodic timer ticks until its callback returns true") {
  int ticks = 0;
  AsyncFD timerFd{-1};
  addTimer(5, false, [&](AsyncFD fd) {
    timerFd = fd;
    return ++ticks == 3;
  });
  CHECK(activeDescriptors() == 1);
  CHECK(hasPendingOperations());
  pollUntil([&] { return ticks == 3; });
  CHECK(ticks == 3);
  // Removed and closed on the third tick: nothing is left to wait for.
  CHECK_FALSE(contains(getGlobalDispatcher(), timerFd));
  CHECK_FALSE(isOpen(static_cast<int>(timerFd)));
  CHECK_FALSE(hasPendingOperations());
  CHECK_THROWS_WITH_AS(poll(0), "No handles or timers registered in dispatcher.", ValueError);
  CHECK(ticks == 3);
  checkDispatcherEmpty();
}

TEST_CASE("addTimer: a oneshot timer fires once and is gone whatever its callback returns "
          "(beyond Nim)") {
  for (const bool result : {false, true}) {
    int calls = 0;
    AsyncFD timerFd{-1};
    addTimer(1, true, [&](AsyncFD fd) {
      timerFd = fd;
      ++calls;
      return result;
    });
    pollUntil([&] { return calls > 0; });
    CHECK(calls == 1);
    // Nim keeps the dead key registered when the callback returns false; here it is gone.
    CHECK_FALSE(contains(getGlobalDispatcher(), timerFd));
    CHECK_FALSE(isOpen(static_cast<int>(timerFd)));
    CHECK_FALSE(hasPendingOperations());
    drain(20);
    CHECK(calls == 1);
  }
  checkDispatcherEmpty();
}

TEST_CASE("addTimer: the callback gets the timer's descriptor, which the dump shows as a Timer "
          "key") {
  AsyncFD seen{-1};
  addTimer(1, true, [&](AsyncFD fd) {
    seen = fd;
    return true;
  });
  std::ostringstream dump;
  dumpDispatcher(dump);
#if defined(_WIN32) // the timer handle's key in the dispatcher's waits
  std::intptr_t timerKey = -1;
  for (const auto& [fd, key] : getGlobalDispatcher()->waits) {
    if (key.events.contains(Event::Timer)) timerKey = static_cast<std::intptr_t>(fd);
  }
  REQUIRE(timerKey >= 0);
  const Dispatcher::WaitKey& key = getGlobalDispatcher()->waits.at(AsyncFD(timerKey));
  CHECK(key.events == EventSet{Event::Timer, Event::Oneshot});
  CHECK(key.data.readCBs.size() == 1);
#else
  const auto& fds = getIoHandler(getGlobalDispatcher()).fds;
  int timerKey = -1;
  for (const auto& key : fds) {
    if (key.fd != InvalidIdent && key.events.contains(Event::Timer)) timerKey = key.fd;
  }
  REQUIRE(timerKey >= 0);
  CHECK(fds[timerKey].events == EventSet{Event::Timer, Event::Oneshot});
  CHECK(fds[timerKey].data.readCBs.size() == 1);
#endif
  CHECK(dump.str().find("events: {Timer, Oneshot}") != std::string::npos);
  pollUntil([&] { return seen != AsyncFD(-1); });
  CHECK(seen == AsyncFD(timerKey));
  checkDispatcherEmpty();
}

TEST_CASE("addTimer: each armed timer counts in activeDescriptors until it is removed") {
  int fired = 0;
  addTimer(1, true, [&](AsyncFD) { return ++fired > 0; });
  addTimer(2, false, [&](AsyncFD) { return ++fired > 0; });
  CHECK(activeDescriptors() == 2);
  pollUntil([&] { return fired == 2; });
  CHECK(fired == 2);
  CHECK(activeDescriptors() == 0);
  checkDispatcherEmpty();
}

TEST_CASE("addTimer: a timeout that is not positive throws ValueError naming addTimer") {
  for (const int timeout : {0, -5}) {
    CHECK_THROWS_WITH_AS(
        addTimer(timeout, false, [](AsyncFD) { return true; }),
        ("addTimer: timeout must be positive, got " + std::to_string(timeout)).c_str(), ValueError);
  }
  checkDispatcherEmpty();
}

TEST_CASE("addTimer: a callback that unregisters its own timer stops it") {
  int ticks = 0;
  addTimer(1, false, [&](AsyncFD fd) {
    ++ticks;
    unregister(fd);
    return false; // ignored: the key is gone already
  });
  pollUntil([&] { return ticks > 0; });
  CHECK(ticks == 1);
  CHECK_FALSE(hasPendingOperations());
  checkDispatcherEmpty();
}

TEST_CASE("addTimer: an exception from the callback leaves poll and keeps a periodic timer") {
  int ticks = 0;
  addTimer(1, false, [&](AsyncFD) -> bool {
    if (++ticks == 1) throw std::runtime_error("tick failed");
    return true;
  });
  bool thrown = false;
  const Clock::time_point start = Clock::now();
  while (!thrown && msSince(start) < 5000) {
    try {
      poll(50);
    } catch (const std::runtime_error& e) {
      thrown = std::string(e.what()) == "tick failed";
    }
  }
  CHECK(thrown);
  CHECK(activeDescriptors() == 1);
  pollUntil([&] { return ticks == 2; });
  CHECK(ticks == 2);
  checkDispatcherEmpty();
}

TEST_CASE("addTimer: a dispatcher destroyed with an armed timer closes its descriptor") {
  const PDispatcher global = getGlobalDispatcher();
  AsyncFD timerFd{-1};
  {
    PDispatcher other = newDispatcher();
    setGlobalDispatcher(other);
    addTimer(60000, false, [](AsyncFD) { return false; });
#if defined(_WIN32)
    for (const auto& [fd, key] : other->waits)
      timerFd = fd;
#else
    for (const auto& key : other->selector.fds) {
      if (key.fd != InvalidIdent) timerFd = AsyncFD(key.fd);
    }
#endif
    setGlobalDispatcher(global);
  }
  REQUIRE(timerFd != AsyncFD(-1));
  CHECK_FALSE(isOpen(static_cast<int>(timerFd)));
  checkDispatcherEmpty();
}

TEST_CASE("addTimer: its descriptor is not a socket: closeSocket, addRead and addWrite refuse it "
          "by name, and unregister stops it without calling it") {
  int calls = 0;
  AsyncFD timerFd{-1};
  addTimer(10'000, false, [&](AsyncFD) { return ++calls > 0; });
#if defined(_WIN32)
  for (const auto& [fd, key] : getGlobalDispatcher()->waits)
    timerFd = fd;
#else
  for (const SelectorKey<PData>& key : getIoHandler(getGlobalDispatcher()).fds) {
    if (key.fd != InvalidIdent) timerFd = AsyncFD(key.fd);
  }
#endif
  REQUIRE(static_cast<int>(timerFd) >= 0);
  const std::string name = "(fd " + std::to_string(static_cast<int>(timerFd)) + ")";
  CHECK_THROWS_WITH_AS(closeSocket(timerFd), doctest::Contains(("closeSocket" + name).c_str()),
                       ValueError);
  CHECK_THROWS_WITH_AS(addRead(timerFd, [](AsyncFD) { return true; }),
                       doctest::Contains(("addRead" + name).c_str()), ValueError);
  CHECK_THROWS_WITH_AS(addWrite(timerFd, [](AsyncFD) { return true; }),
                       doctest::Contains(("addWrite" + name).c_str()), ValueError);
  CHECK(isOpen(static_cast<int>(timerFd))); // nothing above touched it
  unregister(timerFd); // Nim's way to stop a timer: it is closed, and its callback never runs
  CHECK_FALSE(isOpen(static_cast<int>(timerFd)));
  CHECK(calls == 0);
  checkDispatcherEmpty();
}

TEST_CASE("addTimer: takes a std::chrono duration, rounded up to whole milliseconds, or "
          "milliseconds of any integer type") {
  using namespace std::chrono_literals;
  int ticks = 0;
  const Clock::time_point start = Clock::now();
  addTimer(3ms, false, [&](AsyncFD) { return ++ticks == 3; });
  pollUntil([&] { return ticks == 3; });
  CHECK(ticks == 3);
  CHECK(msSince(start) >= 9);
  int fired = 0;
  addTimer(500us, true, [&](AsyncFD) { return ++fired > 0; }); // 1 ms, not 0 (refused)
  addTimer(std::chrono::duration<double, std::milli>(0.25), true,
           [&](AsyncFD) { return ++fired > 0; });
  addTimer(2L, true, [&](AsyncFD) { return ++fired > 0; });
  addTimer(2u, true, [&](AsyncFD) { return ++fired > 0; });
  CHECK(activeDescriptors() == 4);
  pollUntil([&] { return fired == 4; });
  CHECK(fired == 4);
  checkDispatcherEmpty();
}

TEST_CASE("addTimer: a duration that is not positive, longer than an int of milliseconds, or NaN "
          "throws ValueError naming addTimer") {
  using namespace std::chrono;
  const auto never = [](AsyncFD) { return true; };
  CHECK(valueErrorOf([&] { addTimer(0ms, false, never); }) ==
        "addTimer: timeout must be positive, got 0");
  CHECK(valueErrorOf([&] { addTimer(-1us, false, never); }) ==
        "addTimer: timeout must be positive, got 0");
  CHECK(valueErrorOf([&] { addTimer(-3s, false, never); }) ==
        "addTimer: timeout must be positive, got -3000");
  CHECK(valueErrorOf([&] { addTimer(hours(24 * 30), false, never); }) ==
        "addTimer: the timeout is longer than 2147483647 ms");
  CHECK(valueErrorOf([&] { addTimer(hours::max(), false, never); }) ==
        "addTimer: the timeout is longer than 2147483647 ms");
  CHECK(valueErrorOf([&] { addTimer(LLONG_MIN, false, never); }) ==
        "addTimer: timeout must be positive, got -2147483648");
  CHECK(valueErrorOf([&] { addTimer(duration<double>(NAN), false, never); }) ==
        "addTimer: the timeout is NaN");
  CHECK(activeDescriptors() == 0);
  checkDispatcherEmpty();
}
