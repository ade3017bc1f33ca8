// Micro-benchmarks of the core: what one co_await, one coroutine call, one callSoon and one
// resume through a completed future cost, and how many heap allocations a coroutine call makes.
// tools/bench/micro/asio.cpp and nim.nim measure the same things under the same names.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include <asyncdispatch.hpp>

#include "../harness.hpp"

using namespace asyncdispatch;

namespace {

bool quick = false;

// The same program is built by g++ (the library's default) and by clang++: clang elides the frame
// allocation of a coroutine that finishes inside its caller, so the two differ on coroutine calls.
#if defined(__clang__)
constexpr const char* kImpl = "asyncdispatch clang++";
#else
constexpr const char* kImpl = "asyncdispatch";
#endif

void report(const char* name, double value, const char* unit) {
  bench::report("micro", kImpl, name, value, unit);
}

template <class Run>
void measure(const char* name, Run run) {
  bench::measure(kImpl, name, quick, run);
}

// Tells the compiler that any memory may have changed, so the measured work cannot be hoisted
// out of the loop or folded into one multiplication; it emits no instruction.
inline void clobber() {
  asm volatile("" ::: "memory");
}

// Every coroutine below finishes synchronously or is driven to its end by poll, so the sums are
// read from finished futures and printed to stderr: the work has an observable result.
long sink = 0;

Future<long> awaitFinished(Future<int> done, long n) {
  long sum = 0;
  for (long i = 0; i < n; ++i) {
    sum += co_await done;
    clobber();
  }
  co_return sum;
}

Future<int> immediate(int v) {
  co_return v;
}

Future<long> awaitImmediate(long n) {
  long sum = 0;
  for (long i = 0; i < n; ++i)
    sum += co_await immediate(static_cast<int>(i));
  co_return sum;
}

void callSoonOneByOne(long n) {
  long ran = 0;
  for (long i = 0; i < n; ++i) {
    callSoon([&ran] { ++ran; });
    poll(0);
  }
  sink += ran;
}

// Queues a batch, then lets one poll run it: the callback phase runs every callback queued before
// it began, so the epoll_wait of the pass is paid once per batch.
void callSoonBatch(long n) {
  constexpr long kBatch = 1000;
  long ran = 0;
  for (long done = 0; done < n; done += kBatch) {
    for (long i = 0; i < kBatch; ++i)
      callSoon([&ran] { ++ran; });
    while (ran < done + kBatch)
      poll(0);
  }
  sink += ran;
}

// Two coroutines pass a ball back and forth. Each waits on its own future; the other completes it
// from a callSoon'd callback, as an I/O completion would, so every round trip through the loop is
// a complete(), a queued resume and a new future.
struct Table {
  Future<int> box[2];
};

Future<long> pinger(Table& t, long rounds) {
  long sum = 0;
  for (long i = 0; i < rounds; ++i) {
    t.box[0] = newFuture<int>("pinger");
    callSoon([f = t.box[1], i] { f.complete(static_cast<int>(i)); });
    sum += co_await t.box[0];
  }
  co_return sum;
}

Future<void> ponger(Table& t, long rounds) {
  for (long i = 0; i < rounds; ++i) {
    t.box[1] = newFuture<int>("ponger");
    const int v = co_await t.box[1];
    callSoon([f = t.box[0], v] { f.complete(v); });
  }
}

// n resumes: n / 2 rounds, each resuming both coroutines once.
void pingPong(long n) {
  Table t;
  Future<void> pong = ponger(t, n / 2);
  Future<long> ping = pinger(t, n / 2);
  while (!ping.finished() || !pong.finished())
    poll(0);
  sink += ping.read();
}

// Trips to the global operator new per operation: those of run(n + 1) minus those of run(1), over
// n. Taking the difference leaves out the warm-up and, for a loop inside one coroutine, that
// coroutine's call; memory the library recycles itself does not count.
template <class Run>
void countAllocations(const char* name, Run run) {
  constexpr long kOps = 1000;
  auto count = [&](long n) {
    const long before = bench::allocations;
    run(n);
    return bench::allocations - before;
  };
  count(1); // the first use of the dispatcher allocates
  const long one = count(1);
  report(name, static_cast<double>(count(kOps + 1) - one) / kOps, "allocs");
}

} // namespace

int main(int argc, char** argv) {
  quick = bench::quickFlag(argc, argv);

  Future<int> done = newFuture<int>("done");
  done.complete(1);

  measure("co_await finished future", [&](long n) { sink += awaitFinished(done, n).read(); });
  measure("co_await immediate coroutine", [](long n) { sink += awaitImmediate(n).read(); });
  measure("callSoon round trip", callSoonOneByOne);
  measure("callSoon batch", callSoonBatch);
  measure("future completed from a callback", pingPong);
  countAllocations("allocations per coroutine call", [](long n) {
    for (long i = 0; i < n; ++i)
      sink += immediate(static_cast<int>(i)).read();
  });
  countAllocations("allocations per co_await of a finished future",
                   [&](long n) { sink += awaitFinished(done, n).read(); });

  // Ends as it began: nothing queued, no timer, no descriptor, no suspended coroutine.
  if (hasPendingOperations() || !getGlobalDispatcher()->suspended.empty()) {
    std::fprintf(stderr, "micro_asyncdispatch: the dispatcher did not end empty\n");
    return 1;
  }
  std::fprintf(stderr, "micro_asyncdispatch: checksum %ld\n", sink);
}
