// The micro-benchmarks of tools/bench/micro/asyncdispatch.cpp, written the asio way (standalone
// asio, C++20 coroutines, one io_context run by one thread), under the same names.
//
// Without std::aligned_alloc asio takes its coroutine frames and handlers from ::operator new,
// so the counting operator new below sees every allocation asio makes.
#define ASIO_DISABLE_STD_ALIGNED_ALLOC 1
// asio 1.22 turns C++20 coroutines on only for g++ and MSVC; clang (CXX=clang++) has them too.
#define ASIO_HAS_CO_AWAIT 1

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include <asio.hpp>

#include "../harness.hpp"

namespace {

bool quick = false;

void report(const char* name, double value, const char* unit) {
  bench::report("micro", "asio", name, value, unit);
}

template <class Run>
void measure(const char* name, Run run) {
  bench::measure("asio", name, quick, run);
}

// Concurrency hint 1: asio's single-threaded mode, where posting from the running thread takes
// the thread-private queue.
asio::io_context ctx{1};
long sink = 0;

asio::awaitable<int> immediate(int v) {
  co_return v;
}

asio::awaitable<void> awaitImmediate(long n) {
  long sum = 0;
  for (long i = 0; i < n; ++i)
    sum += co_await immediate(static_cast<int>(i));
  sink += sum;
}

// Runs the coroutine to its end; a finished io_context must be restarted before it runs again.
void spawnAndRun(asio::awaitable<void> coroutine) {
  asio::co_spawn(ctx, std::move(coroutine), asio::detached);
  ctx.run();
  ctx.restart();
}

// run_one() is the pass that matches one poll(0) of asyncdispatch and Nim: it asks epoll once and
// runs the handler (poll() asks epoll twice, before and after the handler). The work guard keeps
// the io_context from stopping each time its queue empties; letting it go stops the io_context,
// which is then restarted for the next benchmark.
void postOneByOne(long n) {
  auto guard = asio::make_work_guard(ctx);
  long ran = 0;
  for (long i = 0; i < n; ++i) {
    asio::post(ctx, [&ran] { ++ran; });
    ctx.run_one();
  }
  guard.reset();
  ctx.restart();
  sink += ran;
}

void postBatch(long n) {
  constexpr long kBatch = 1000;
  long ran = 0;
  for (long done = 0; done < n; done += kBatch) {
    for (long i = 0; i < kBatch; ++i)
      asio::post(ctx, [&ran] { ++ran; });
    ctx.run();
    ctx.restart();
  }
  sink += ran;
}

// Trips to the global operator new per operation: those of run(n + 1) minus those of run(1), over
// n. Taking the difference leaves out the warm-up and the co_spawn that hosts the loop (six
// allocations each time); memory asio recycles from its per-thread caches does not count.
template <class Run>
void countAllocations(const char* name, Run run) {
  constexpr long kOps = 1000;
  auto count = [&](long n) {
    const long before = bench::allocations;
    run(n);
    return bench::allocations - before;
  };
  count(1); // fills asio's per-thread caches of recycled memory
  const long one = count(1);
  report(name, static_cast<double>(count(kOps + 1) - one) / kOps, "allocs");
}

// One co_await of a 16 KiB read per message into a string made for it, the peer having written
// the 16 KiB first, as tools/bench/micro/asyncdispatch.cpp's co_await recv(fd, 16384) does.
constexpr std::size_t kMessage = 16384;

asio::awaitable<void> receiveMessages(asio::local::stream_protocol::socket& socket,
                                      asio::local::stream_protocol::socket& peer, long n,
                                      long* buffers, long* reads) {
  static const std::string message(kMessage, 'm');
  for (long i = 0; i < n; ++i) {
    asio::write(peer, asio::buffer(message));
    for (std::size_t got = 0; got < kMessage;) {
      std::string data(kMessage, '\0');
      const std::size_t size =
          co_await socket.async_read_some(asio::buffer(data), asio::use_awaitable);
      data.resize(size);
      got += size;
      *buffers += bench::bufferBytes(data.capacity());
      ++*reads;
      sink += data[0];
    }
  }
}

// What one run of receiveMessages asked of operator new beyond the received strings' buffers,
// and how many reads it made.
struct Counts {
  long allocs;
  long bytes;
  long reads;
};

void countRecvAllocations() {
  asio::local::stream_protocol::socket socket(ctx), peer(ctx);
  asio::local::connect_pair(socket, peer);
  constexpr long kOps = 1000;
  auto count = [&](long n) {
    long buffers = 0, reads = 0;
    const long allocs = bench::allocations, bytes = bench::allocatedBytes;
    spawnAndRun(receiveMessages(socket, peer, n, &buffers, &reads));
    return Counts{bench::allocations - allocs, bench::allocatedBytes - bytes - buffers, reads};
  };
  count(1);
  const auto one = count(1), many = count(kOps + 1);
  const double reads = static_cast<double>(many.reads - one.reads);
  report("co_await recv of 16 KiB: allocations",
         static_cast<double>(many.allocs - one.allocs) / reads, "allocs");
  report("co_await recv of 16 KiB: heap bytes beyond the payload",
         static_cast<double>(many.bytes - one.bytes) / reads, "bytes");
}

} // namespace

int main(int argc, char** argv) {
  quick = bench::quickFlag(argc, argv);

  measure("co_await immediate coroutine", [](long n) { spawnAndRun(awaitImmediate(n)); });
  // Until a timer or a socket exists, the io_context has no reactor and never enters the kernel;
  // this figure has no counterpart in the other loops, which always ask epoll.
  measure("callSoon round trip without a reactor", postOneByOne);
  // Making a timer brings in the epoll reactor for good, as any program with I/O has it: from now
  // on a pass also runs epoll_wait, as asyncdispatch's and Nim's do.
  asio::steady_timer timer(ctx);
  measure("callSoon round trip", postOneByOne);
  measure("callSoon batch", postBatch);
  countAllocations("allocations per coroutine call",
                   [](long n) { spawnAndRun(awaitImmediate(n)); });
  countRecvAllocations();

  std::fprintf(stderr, "micro_asio: checksum %ld\n", sink);
}
