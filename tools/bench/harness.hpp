// What the C++ bench programs share: the `BENCH {json}` line the driver (run.py) collects, the
// --quick flag, the time-boxed best-of-five measurement, and the count of trips to the global
// operator new (defined in counting_new.cpp, linked into the programs that count).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>

namespace bench {

// Trips to the global operator new on this thread, and the bytes they asked for
// (counting_new.cpp).
extern thread_local long allocations;
extern thread_local long allocatedBytes;

// The bytes of one std::string's own buffer (its characters and the terminating null), which a
// copy of the string would allocate again.
inline long bufferBytes(std::size_t capacity) {
  return static_cast<long>(capacity) + 1;
}

inline bool quickFlag(int argc, char** argv) {
  return argc > 1 && std::strcmp(argv[1], "--quick") == 0;
}

inline void report(const char* bench, const char* impl, const char* name, double value,
                   const char* unit) {
  std::printf("BENCH {\"bench\":\"%s\",\"impl\":\"%s\",\"name\":\"%s\",\"value\":%.3f,"
              "\"unit\":\"%s\"}\n",
              bench, impl, name, value, unit);
  std::fflush(stdout);
}

// Finds the n for which `run(n)` (n operations) lasts about the time box, then reports the best
// of five runs at that n, in ns per operation.
template <class Run>
void measure(const char* impl, const char* name, bool quick, Run run) {
  using Clock = std::chrono::steady_clock;
  const double box = quick ? 20e6 : 300e6; // ns
  auto timed = [&](long n) {
    const auto start = Clock::now();
    run(n);
    return std::chrono::duration<double, std::nano>(Clock::now() - start).count();
  };
  long n = 1000;
  double ns = 0;
  while ((ns = timed(n)) < box / 10)
    n *= 4;
  n = static_cast<long>(n * box / ns);
  double best = 1e300;
  for (int i = 0; i < 5; ++i)
    best = std::min(best, timed(n) / n);
  report("micro", impl, name, best, "ns");
}

} // namespace bench
