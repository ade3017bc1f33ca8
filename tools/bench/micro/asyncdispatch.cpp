// Micro-benchmarks of the core: what one co_await, one coroutine call, one callSoon and one
// resume through a completed future cost, how many heap allocations a coroutine call makes, and
// what a co_await recv of 16 KiB allocates (a copy of the string would show as a second buffer).
// tools/bench/micro/asio.cpp and nim.nim measure the same things under the same names.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

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

// One co_await recv(fd, 16384) per message, the peer having written the 16 KiB first (a blocking
// write on the other end of a socket pair), as a server reading a request does; `buffers` adds
// up the bytes of the strings received, which recv has to allocate.
constexpr int kMessage = 16384;

Future<void> receiveMessages(AsyncFD fd, int peer, long n, long* buffers, long* reads) {
  static const std::string message(kMessage, 'm');
  for (long i = 0; i < n; ++i) {
    for (std::size_t sent = 0; sent < message.size();) {
      const ssize_t w = ::send(peer, message.data() + sent, message.size() - sent, 0);
      if (w <= 0) std::abort();
      sent += static_cast<std::size_t>(w);
    }
    for (long got = 0; got < kMessage;) {
      const std::string data = co_await recv(fd, kMessage);
      if (data.empty()) std::abort();
      got += static_cast<long>(data.size());
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

// Per co_await recv: the trips to operator new and the heap bytes beyond the received strings'
// own buffers, the difference of n + 1 messages and 1 over the reads between them, as
// countAllocations counts.
void countRecvAllocations() {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) std::abort();
  ::fcntl(pair[0], F_SETFL, ::fcntl(pair[0], F_GETFL) | O_NONBLOCK);
  const AsyncFD fd = AsyncFD(pair[0]);
  register_(fd);
  constexpr long kOps = 1000;
  auto count = [&](long n) {
    long buffers = 0, reads = 0;
    const long allocs = bench::allocations, bytes = bench::allocatedBytes;
    waitFor(receiveMessages(fd, pair[1], n, &buffers, &reads));
    return Counts{bench::allocations - allocs, bench::allocatedBytes - bytes - buffers, reads};
  };
  count(1);
  const auto one = count(1), many = count(kOps + 1);
  const double reads = static_cast<double>(many.reads - one.reads);
  report("co_await recv of 16 KiB: allocations",
         static_cast<double>(many.allocs - one.allocs) / reads, "allocs");
  report("co_await recv of 16 KiB: heap bytes beyond the payload",
         static_cast<double>(many.bytes - one.bytes) / reads, "bytes");
  closeSocket(fd);
  ::close(pair[1]);
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
  countRecvAllocations();

  // Ends as it began: nothing queued, no timer, no descriptor, no suspended coroutine.
  if (hasPendingOperations() || !getGlobalDispatcher()->suspended.empty()) {
    std::fprintf(stderr, "micro_asyncdispatch: the dispatcher did not end empty\n");
    return 1;
  }
  std::fprintf(stderr, "micro_asyncdispatch: checksum %ld\n", sink);
}
