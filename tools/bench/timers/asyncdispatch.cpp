// One million sleepAsync timers with random delays in [0, 1000] ms, each with a callback that
// counts fires: how long scheduling takes, how late the last one fires, and the peak memory.
// `--quick` schedules 100,000. The delays come from the same LCG as the peers' versions.
#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include <asyncdispatch.hpp>

#include "../harness.hpp"

using namespace asyncdispatch;
using Clock = std::chrono::steady_clock;

namespace {

int fired = 0;

// Knuth's MMIX LCG, seed 42: every implementation draws the same delays in the same order.
std::uint64_t rng = 42;
int nextDelay() {
  rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
  return static_cast<int>((rng >> 33) % 1001);
}

void report(const char* name, double value, const char* unit) {
  bench::report("timers", "asyncdispatch", name, value, unit);
}

} // namespace

int main(int argc, char** argv) {
  const bool quick = bench::quickFlag(argc, argv);
  const int n = quick ? 100'000 : 1'000'000;
  getGlobalDispatcher(); // made outside the timed region

  const Clock::time_point start = Clock::now();
  for (int i = 0; i < n; ++i)
    sleepAsync(nextDelay()).addCallback([] { ++fired; });
  const Clock::time_point scheduled = Clock::now();
  while (fired < n)
    poll();
  const Clock::time_point last = Clock::now();

  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  report("schedule time", std::chrono::duration<double>(scheduled - start).count(), "s");
  report("time to last fire", std::chrono::duration<double>(last - start).count(), "s");
  report("peak RSS", usage.ru_maxrss / 1024.0, "MB"); // ru_maxrss is in KiB on Linux
}
