// One million asio::steady_timer objects with random delays in [0, 1000] ms, each with an
// async_wait handler that counts fires: schedule time, time to last fire, peak RSS.
// `--quick` schedules 100,000. The delays come from the same LCG as the other versions.
#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include <asio.hpp>

#include "../harness.hpp"

using Clock = std::chrono::steady_clock;

namespace {

int n;
int fired = 0;
Clock::time_point last;

// Knuth's MMIX LCG, seed 42: every implementation draws the same delays in the same order.
std::uint64_t rng = 42;
int nextDelay() {
  rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
  return static_cast<int>((rng >> 33) % 1001);
}

void report(const char* name, double value, const char* unit) {
  bench::report("timers", "asio", name, value, unit);
}

} // namespace

int main(int argc, char** argv) {
  const bool quick = bench::quickFlag(argc, argv);
  n = quick ? 100'000 : 1'000'000;
  asio::io_context io(1); // a hint that one thread runs it: no cross-thread wake-ups
  std::vector<asio::steady_timer> timers;
  timers.reserve(n);

  const Clock::time_point start = Clock::now();
  for (int i = 0; i < n; ++i) {
    asio::steady_timer& t = timers.emplace_back(io, std::chrono::milliseconds(nextDelay()));
    t.async_wait([](asio::error_code) {
      if (++fired == n) last = Clock::now();
    });
  }
  const Clock::time_point scheduled = Clock::now();
  io.run(); // returns once every handler has run

  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  report("schedule time", std::chrono::duration<double>(scheduled - start).count(), "s");
  report("time to last fire", std::chrono::duration<double>(last - start).count(), "s");
  report("peak RSS", usage.ru_maxrss / 1024.0, "MB"); // ru_maxrss is in KiB on Linux
  return fired == n ? 0 : 1;
}
