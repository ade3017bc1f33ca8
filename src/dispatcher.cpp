// The portable half of the dispatcher: the per-thread global dispatcher, the callSoon queue, the
// timers heap and the loop phases that do not touch the kernel; plus drain and runForever, which
// are built from poll.
#include <algorithm>
#include <cstdio>
#include <vector>
#include <chrono>
#include <climits>
#include <cmath>
#include <memory>
#include <atomic>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <unordered_map>

#include "family.hpp"
#include "loop.hpp"

namespace asyncdispatch {

namespace {

using Clock = std::chrono::steady_clock;

// Callbacks queued while the callback phase runs still run in that pass, as in Nim, so a chain of
// coroutines finishing one after another settles in one pass. But at most this many beyond the
// ones queued when the phase began: a callback that re-queues itself forever would otherwise keep
// the loop from ever reaching selectInto and the timers again (Nim's drain-until-empty hangs).
constexpr std::size_t kExtraCallbacksPerPass = 1024;

// How many operations may complete synchronously per callback phase (see takeSynchronousTurn).
// Above the 64 events one selectInto reports, so an echo server's sends never have to wait,
// yet small enough that a sender that never blocks yields to the loop every few hundred sends.
constexpr int kSynchronousTurnsPerPass = 256;
thread_local int synchronousTurns = kSynchronousTurnsPerPass;

// The thread's global dispatcher (Nim's gDisp threadvar). Thread-local storage holds only plain
// values; the PDispatcher that owns the dispatcher lives on the heap, in `owners`, keyed by the
// thread. The reason is MinGW-w64: its thread_local objects live in emulated TLS, which winpthreads
// frees before libstdc++ runs the thread's thread_local destructors, so at thread exit a destructor
// gets a freed `this` and every thread_local reads as freshly initialised. ThreadExit's
// destructor therefore reads nothing of its own: it finds the dispatcher by thread id, sets
// `global` again and only then destroys it. From then on a callback queued by a destructor (a
// coroutine frame being torn down) is dropped, not queued on a dispatcher that is going away.
struct GlobalDispatcher {
  PDispatcher* owner = nullptr; // this thread's entry in owners()
  Dispatcher* raw = nullptr;
  bool shutDown = false;
  unsigned forks = 0; // the value of `forks` this thread's dispatcher was made or renewed under
};
constinit thread_local GlobalDispatcher global;

// How many times this process is a forked child of a process that had the library: bumped in the
// child by resumeInChild, compared by currentDispatcher (one load, no getpid system call).
constinit std::atomic<unsigned> forks{0};

struct Owners {
  std::mutex lock;
  std::unordered_map<std::thread::id, std::unique_ptr<PDispatcher>> byThread;
};
// Never destroyed: a thread may exit after static destructors have run.
Owners& owners() {
  static Owners* const all = new Owners;
  return *all;
}

struct ThreadExit {
  ~ThreadExit() {
    std::unique_ptr<PDispatcher> owner;
    {
      Owners& all = owners();
      const std::lock_guard<std::mutex> locked(all.lock);
      const auto it = all.byThread.find(std::this_thread::get_id());
      if (it == all.byThread.end()) return;
      owner = std::move(it->second);
      all.byThread.erase(it);
    }
    global.owner = nullptr;
    global.shutDown = true;
    global.raw = owner->get(); // stays valid meanwhile, for destructors of the coroutines torn down
    owner->reset();
    global.raw = nullptr;
  }
};
thread_local ThreadExit threadExit;

// Dispatchers a forked child keeps and never destroys: the one a fork in the middle of a pass left
// behind (that pass goes on when the callback that forked returns), and those of the parent's
// other threads, which the child does not have (their coroutines may hold anything). Their kernel
// state is not touched: the child's copies of their descriptors stay open.
std::vector<PDispatcher>& keptAfterFork() {
  static auto* const kept = new std::vector<PDispatcher>; // never destroyed, as owners()
  return *kept;
}

// Beyond Nim, which has no fork handling (libuv has uv_loop_fork, libevent event_reinit, asio
// notify_fork): the first use of the library in a forked child finds a fresh dispatcher. The
// inherited one forgets its keys without touching the kernel state it shares with the parent
// (Family::forgetAfterFork), its sockets are registered in the fresh one with nothing armed, and
// it is destroyed with its timers, queued callbacks and suspended coroutines, none of which runs.
void renewAfterFork() {
  const unsigned before = global.forks;
  global.forks = forks.load(std::memory_order_relaxed); // first: what runs below must not renew
  if (global.owner == nullptr) return;
  try {
    const PDispatcher inherited = *global.owner;
    const std::vector<AsyncFD> sockets = detail::Family::forgetAfterFork(*inherited);
    PDispatcher fresh = newDispatcher();
    for (const AsyncFD fd : sockets)
      detail::Family::registerHandle(*fresh, fd);
    global.raw = fresh.get();
    *global.owner = std::move(fresh);
    if (detail::insidePass) {
      // A callback forked: when it returns, the inherited pass goes on, so its dispatcher stays,
      // with nothing left to run; and the child may run the fresh one from that callback.
      inherited->timers.clear();
      inherited->cancelledTimers = 0;
      inherited->callbacks.clear();
      keptAfterFork().push_back(inherited);
      detail::insidePass = false;
    }
  } catch (...) {
    global.forks = before;
    throw;
  }
}

// The order of `timers`: the earliest finishAt first, ties by creation order (the future's id).
bool firesBefore(const TimerEntry& a, const TimerEntry& b) {
  if (a.finishAt != b.finishAt) return a.finishAt < b.finishAt;
  return a.fut.id() < b.fut.id();
}

// `timers` is a 4-ary min-heap: the children of entry i are 4i+1 to 4i+4, 64 contiguous bytes.
// Half the levels of a binary heap, each read from one or two cache lines: with a million
// timers, a binary heap's pops spend most of their time waiting for memory.
constexpr std::size_t kArity = 4;

void siftUp(TimerHeap& heap, std::size_t i) {
  TimerEntry moving = std::move(heap[i]);
  while (i > 0) {
    const std::size_t parent = (i - 1) / kArity;
    if (!firesBefore(moving, heap[parent])) break;
    heap[i] = std::move(heap[parent]);
    i = parent;
  }
  heap[i] = std::move(moving);
}

void siftDown(TimerHeap& heap, std::size_t i) {
  TimerEntry moving = std::move(heap[i]);
  const std::size_t n = heap.size();
  for (;;) {
    const std::size_t first = kArity * i + 1;
    if (first >= n) break;
    std::size_t earliest = first;
    for (std::size_t c = first + 1; c < std::min(first + kArity, n); ++c) {
      if (firesBefore(heap[c], heap[earliest])) earliest = c;
    }
    if (!firesBefore(heap[earliest], moving)) break;
    heap[i] = std::move(heap[earliest]);
    i = earliest;
  }
  heap[i] = std::move(moving);
}

// How a sleepAsync timer is cancelled: it fails, and its entry stays in the heap, skipped when it
// comes to the top, until the dead entries are half of the heap; then the heap is rebuilt
// without them (amortised O(1) per cancel).
struct TimerCanceller final : detail::Canceller {
  void cancel(detail::FutureStateBase& timer) override {
    DispatcherBase& p = detail::currentDispatcher();
    timer.fail(std::make_exception_ptr(CancelledError("sleepAsync: cancelled")));
    timer.cancelled = true; // a timer failed by hand still fires: only these entries are dead
    if (++p.cancelledTimers * 2 < p.timers.size()) return;
    p.timers.eraseIf([](const TimerEntry& t) { return detail::stateOf(t.fut).cancelled; });
    p.cancelledTimers = 0;
    for (std::size_t i = p.timers.size() / kArity + 1; i-- > 0;) {
      if (i < p.timers.size()) siftDown(p.timers, i);
    }
  }
};
TimerCanceller timerCanceller;

Future<void> addSleep(Clock::duration delay) {
  Future<void> fut = newFuture<void>("sleepAsync");
  detail::stateOf(fut).setCancelHook(detail::CancelHook::object(&timerCanceller));
  TimerHeap& timers = detail::currentDispatcher().timers;
  timers.push_back(TimerEntry{Clock::now() + delay, fut});
  siftUp(timers, timers.size() - 1);
  return fut;
}

} // namespace

namespace detail {

Dispatcher& currentDispatcher() {
  if (global.raw == nullptr || global.forks != forks.load(std::memory_order_relaxed)) {
    if (global.shutDown) throw ValueError("the thread's dispatcher has been destroyed");
    getGlobalDispatcher();
  }
  return *global.raw;
}

SuspendedList& currentSuspendedList() {
  return currentDispatcher().suspended;
}

void enqueueCallback(UniqueFunction<void()> cb) {
  if (global.shutDown) return; // the thread is exiting: cb is destroyed here, never run
  currentDispatcher().callbacks.push_back(std::move(cb));
}

int adjustTimeout(const DispatcherBase& p, int timeout) {
  if (!p.callbacks.empty()) return 0;
  if (p.timers.empty()) return timeout;
  const Clock::duration untilNext = p.timers.front().finishAt - Clock::now();
  if (untilNext <= Clock::duration::zero()) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(untilNext).count();
  if (timeout >= 0 && ms >= timeout) return timeout;
  return static_cast<int>(std::min<long long>(ms, INT_MAX));
}

void processTimers(DispatcherBase& p) {
  if (p.timers.empty()) return;
  const Clock::time_point now = Clock::now();
  while (!p.timers.empty() && p.timers.front().finishAt <= now) {
    Future<void> fut = std::move(p.timers.front().fut);
    p.timers.front() = std::move(p.timers.back());
    p.timers.pop_back();
    if (!p.timers.empty()) siftDown(p.timers, 0);
    if (!fut.finished()) {
      fut.complete(); // only queues its callbacks; nothing runs here
    } else if (stateOf(fut).cancelled) {
      --p.cancelledTimers;
    }
  }
}

void cancelTimer(const Future<void>& timer) {
  if (timer.finished()) return;
  timer.clearCallbacks(); // withTimeout's own, and any a user added: none will run
  timer.cancel();
}

constinit thread_local bool insidePass = false;

void throwNestedPoll() {
  throw ValueError("poll: called from a callback that poll is running (poll and waitFor "
                   "cannot be nested; co_await the future instead)");
}

void dumpTimersAndCallbacks(std::ostream& os, const DispatcherBase& p) {
  using namespace std::chrono;
  os << "  timers: seq[tuple[finishAt, fut]] [";
  const steady_clock::time_point now = steady_clock::now();
  std::vector<const TimerEntry*> sorted;
  for (const TimerEntry& t : p.timers)
    sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const TimerEntry* a, const TimerEntry* b) {
    return a->finishAt != b->finishAt ? a->finishAt < b->finishAt : a->fut.id() < b->fut.id();
  });
  const char* sep = "\n";
  for (const TimerEntry* t : sorted) {
    const double inMs = duration<double, std::milli>(t->finishAt - now).count();
    char offset[32];
    std::snprintf(offset, sizeof offset, "%s %.1f ms", inMs < 0 ? "-" : "+", std::abs(inMs));
    os << sep << "    (finishAt: now " << offset << ", fut: Future[void] #" << t->fut.id()
       << " from " << t->fut.fromProc() << (t->fut.failed() ? ", cancelled" : "") << ")";
    sep = ",\n";
  }
  os << (sorted.empty() ? "]\n" : "\n  ]\n");
  os << "  callbacks: Deque[proc ()] (" << p.callbacks.size() << " queued)\n"
     << "  suspended: " << p.suspended.size() << " coroutines\n";
}

bool takeSynchronousTurn() noexcept {
  if (synchronousTurns == 0) return false;
  --synchronousTurns;
  return true;
}

void processPendingCallbacks(DispatcherBase& p) {
  synchronousTurns = kSynchronousTurnsPerPass;
  std::size_t budget = p.callbacks.size() + kExtraCallbacksPerPass;
  while (budget-- > 0 && !p.callbacks.empty()) {
    // Taken off the queue before it runs: if it throws, the exception leaves poll and the rest
    // stay queued for the next pass, as in Nim.
    UniqueFunction<void()> cb = std::move(p.callbacks.front());
    p.callbacks.pop_front();
    cb();
  }
}

std::string where(const char* op, AsyncFD fd) {
  return std::string(op) + "(fd " + std::to_string(static_cast<std::intptr_t>(fd)) + ")";
}

void prepareFork() noexcept {
  owners().lock.lock();
  lockRecycler();
}

void resumeInParent() noexcept {
  unlockRecycler();
  owners().lock.unlock();
}

void resumeInChild() noexcept {
  forks.fetch_add(1, std::memory_order_relaxed);
  unlockRecycler();
  owners().lock.unlock();
}

} // namespace detail

PDispatcher newDispatcher() {
  return std::make_shared<Dispatcher>();
}

void setGlobalDispatcher(PDispatcher disp) {
  if (!disp) throw ValueError("setGlobalDispatcher: the dispatcher is nil");
  if (global.shutDown) throw ValueError("setGlobalDispatcher: the thread is exiting");
  if (global.forks != forks.load(std::memory_order_relaxed)) renewAfterFork();
  if (global.owner) {
    if (*global.owner != disp && !(*global.owner)->callbacks.empty())
      throw ValueError("setGlobalDispatcher: the current dispatcher still has queued callbacks");
    global.raw = disp.get();
    *global.owner = std::move(disp); // the old one may be destroyed here, with global.raw set
    return;
  }
  auto owner = std::make_unique<PDispatcher>(std::move(disp));
  (void)&threadExit; // makes sure the dispatcher is destroyed at thread exit
  global.owner = owner.get();
  global.raw = owner->get();
  Owners& all = owners();
  const std::lock_guard<std::mutex> locked(all.lock);
  std::unique_ptr<PDispatcher>& entry = all.byThread[std::this_thread::get_id()];
  // Taken already only in a forked child, by a thread of the parent with this id (see
  // keptAfterFork).
  if (entry) keptAfterFork().push_back(std::move(*entry));
  entry = std::move(owner);
}

PDispatcher getGlobalDispatcher() {
  if (global.forks != forks.load(std::memory_order_relaxed)) renewAfterFork();
  if (!global.owner) {
    if (global.shutDown) throw ValueError("the thread's dispatcher has been destroyed");
    setGlobalDispatcher(newDispatcher());
  }
  return *global.owner;
}

Future<void> detail::sleepFor(std::chrono::nanoseconds delay) {
  return addSleep(std::chrono::ceil<Clock::duration>(delay));
}

Future<void> sleepAsync(int ms) {
  return addSleep(std::chrono::milliseconds(ms));
}

Future<void> sleepAsync(double ms) {
  if (std::isnan(ms)) throw ValueError("sleepAsync: the delay is NaN");
  // Clamped to about 31 years so the deadline cannot overflow the clock.
  const double ns = std::clamp(ms * 1e6, -1e18, 1e18);
  return addSleep(std::chrono::nanoseconds(static_cast<long long>(ns)));
}

void drain(int timeout) {
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout);
  while (hasPendingOperations()) {
    if (timeout < 0) {
      poll(-1); // no budget: until nothing is pending
      continue;
    }
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    poll(static_cast<int>(std::max<long long>(left.count(), 0)));
    if (Clock::now() >= deadline) break;
  }
}

void runForever() {
  for (;;)
    poll();
}

std::ostream& operator<<(std::ostream& os, Event e) {
  static constexpr const char* names[] = {"Read",  "Write", "Timer", "Signal",  "Process",
                                          "Vnode", "User",  "Error", "Oneshot", "Finished"};
  return os << names[static_cast<unsigned>(e)];
}

std::ostream& operator<<(std::ostream& os, EventSet events) {
  os << '{';
  const char* sep = "";
  for (unsigned i = 0; i <= static_cast<unsigned>(Event::Finished); ++i) {
    if (events.contains(static_cast<Event>(i))) {
      os << sep << static_cast<Event>(i);
      sep = ", ";
    }
  }
  return os << '}';
}

} // namespace asyncdispatch
