// Seeds: tools/fuzz/corpus/ was written once by a throwaway Python script that spelled out one
// short op program per scenario (traffic, combinators, timers, events, coroutines, closes, misuse)
// in this file's byte format.
//
// The libFuzzer harness of the dispatcher (`make fuzz`). Each input is a program of operations on
// the thread's dispatcher: futures completed, failed and cancelled by hand, combined with and, or,
// all, withTimeout and wait; sleepAsync and addTimer; AF_UNIX socketpairs with sends, receives,
// shutdowns, closes and re-registrations; raw addRead/addWrite callbacks; coroutines awaiting all
// of these; AsyncEvents; polls of at most 2 ms. After every operation, and in every callback, the
// harness checks what must always hold, and aborts naming the broken invariant:
//  - a future finishes once and keeps its outcome; each of its callbacks runs exactly once, after
//    it finished, in the order they were added; an outcome agrees with its inputs (and, or, all,
//    withTimeout, co_await) and a timer never fires before its deadline;
//  - no addRead/addWrite, timer or event callback runs after it was removed, its descriptor
//    closed or unregistered; closeSocket and unregister call each waiting callback exactly once;
//  - every byte received on a socketpair is the next byte sent in that direction (a send that
//    failed may have left only a prefix), an open pair never reports an end of stream, and at
//    the end every byte sent on a pair nobody disturbed has arrived;
//  - the selector's counts agree with its keys and with the harness's model after each step, and
//    at the end of each input the dispatcher and the process's descriptor table are as they were.
// Misuse must throw exactly ValueError, completing twice FutureError; a poll may only rethrow the
// failures of futures given to asyncCheck, each once.
#include <dirent.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include <asyncdispatch.hpp>

using namespace asyncdispatch;

namespace {

using Clock = std::chrono::steady_clock;

// Bounds that keep each input to milliseconds.
constexpr int kMaxOps = 512;
constexpr std::size_t kPoolSize = 64;     // futures the operations can pick from
constexpr std::size_t kMaxWatches = 1024; // futures made per input, receives included
constexpr std::size_t kMaxPairs = 8;
constexpr std::size_t kMaxEvents = 4;
constexpr std::size_t kMaxTimers = 8;
constexpr std::size_t kMaxRaw = 32;
constexpr std::size_t kMaxSendsPerDirection = 120; // below 128: segment ids stay unique
constexpr std::size_t kMaxBytesPerInput = 1 << 20;
constexpr int kMaxSend = 64 * 1024;
constexpr int kMaxBlockingPolls = 32;
constexpr int kSettlePasses = 2000;
constexpr int kTeardownPasses = 2000;
// A descriptor number no input ever registers: misuse is tried on it.
constexpr AsyncFD kUnregistered{1 << 20};

// One executed operation, for the report of a broken invariant.
struct TraceEntry {
  const char* op;
  int a, b, c;
};
std::vector<TraceEntry> trace;

[[noreturn]] void violation(const std::string& what) {
  std::fprintf(stderr, "\ndispatcher_fuzz: invariant broken: %s\n", what.c_str());
  std::fprintf(stderr, "operations of this input (%zu):\n", trace.size());
  for (const TraceEntry& t : trace)
    std::fprintf(stderr, "  %s %d %d %d\n", t.op, t.a, t.b, t.c);
  std::ostringstream dump;
  dumpDispatcher(dump);
  std::fprintf(stderr, "%s", dump.str().c_str());
  std::fflush(stderr);
  std::abort();
}

std::string describe(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "(not a std::exception)";
  }
}

// The failure a harness gives a future by hand, told apart from the library's own errors.
class HandFailure : public IOError {
public:
  using IOError::IOError;
};

enum class ErrorKind { Cancelled, OS, ByHand, Other };

ErrorKind errorKind(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const CancelledError&) {
    return ErrorKind::Cancelled;
  } catch (const HandFailure&) {
    return ErrorKind::ByHand;
  } catch (const OSError&) {
    return ErrorKind::OS;
  } catch (...) {
    return ErrorKind::Other;
  }
}

// Reads the input a byte at a time; past the end it reads zeros, so every operation consumes the
// same number of bytes whatever the state, and a mutation stays local to its operation.
class ByteReader {
public:
  ByteReader(const std::uint8_t* data, std::size_t size) : p_(data), end_(data + size) {}
  bool empty() const { return p_ == end_; }
  std::uint8_t byte() { return p_ == end_ ? 0 : *p_++; }
  int below(int n) { return byte() % n; }

private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

int openDescriptors() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) violation("cannot open /proc/self/fd");
  int n = 0;
  while (readdir(dir) != nullptr)
    ++n;
  closedir(dir);
  return n;
}

// Byte j of the id-th send in one direction. A send's first byte has the top bit set and carries
// its id, the others have it clear and depend on id and position: so a receiver can tell where
// a send that failed half-way stops and the next one starts, and a byte out of place shows.
char segmentByte(std::size_t id, std::size_t j) {
  if (j == 0) return static_cast<char>(0x80 | (id & 0x7F));
  std::uint32_t h = static_cast<std::uint32_t>(j) * 0x9E3779B1u ^
                    static_cast<std::uint32_t>(id + 1) * 0x85EBCA77u;
  h ^= h >> 15;
  h *= 0x2C1B3C6Du;
  h ^= h >> 12;
  return static_cast<char>(h & 0x7F);
}

using AnyFuture = std::variant<Future<int>, Future<void>, Future<bool>, Future<std::string>,
                               Future<std::vector<int>>>;

const FutureBase& baseOf(const AnyFuture& f) {
  return std::visit([](const auto& fut) -> const FutureBase& { return fut; }, f);
}

enum class Kind { User, Sleep, And, Or, All, Timeout, Recv, RecvInto, Send, Coroutine };

constexpr const char* kKindNames[] = {"user",    "sleep", "and",      "or",   "all",
                                      "timeout", "recv",  "recvInto", "send", "coroutine"};

// Futures the harness may complete or fail by hand: the library checks before it completes them.
bool completableByHand(Kind k) {
  return k == Kind::User || k == Kind::Sleep || k == Kind::And || k == Kind::Or || k == Kind::All ||
         k == Kind::Timeout;
}

struct End;

// One future the harness made, and what it knows of it.
struct Watch {
  Kind kind;
  AnyFuture fut;
  std::size_t number = 0;
  std::vector<const Watch*> inputs; // what a combinator or awaitOne was made from
  Clock::time_point earliest{};     // Sleep, Timeout: the timer cannot fire before this
  bool byHand = false;              // completed or failed by the harness
  std::optional<int> value;         // User: what complete() was given
  int attached = 0;                 // counting callbacks that must run
  int runs = 0;
  std::uint64_t lastRunSeq = 0;
  bool seenFinished = false;
  bool seenFailed = false;
  std::exception_ptr seenError;
  int asyncChecks = 0;
  End* end = nullptr; // Recv, RecvInto: the receiving end; Send: the sending end
  bool peek = false;
  bool drain = false;                        // a receive the teardown issued
  std::shared_ptr<std::vector<char>> buffer; // RecvInto's
};

std::string nameOf(const Watch& w) {
  return std::string(kKindNames[static_cast<int>(w.kind)]) + " future #" + std::to_string(w.number);
}

// One send: its bytes and its future (a failed send may have written only a prefix).
struct Segment {
  std::shared_ptr<const std::string> data;
  const Watch* send;
};

// The bytes of one direction of a pair, and how far the receiver has matched them.
struct Direction {
  std::vector<Segment> segs;
  std::size_t seg = 0;
  std::size_t off = 0;
  bool drainPending = false;
};

struct Pair;

struct End {
  Pair* pair = nullptr;
  int side = 0;
  int fd = -1;
  bool open = true;
  bool abandoning = false; // inside closeSocket or unregister of this end
  int epoch = 0;           // bumped by each close and unregister
};

struct Pair {
  End ends[2];
  Direction dirs[2]; // dirs[s] carries what ends[s] sends
  // Shut down, closed or unregistered on either side: an end of stream or an OSError may come.
  bool disturbed = false;
};

// An addRead/addWrite callback.
struct RawWatch {
  End* end;
  int epoch;
  int limit;
  int calls = 0;
  bool live = true;
  bool abandonCall = false;
};

// An addTimer callback.
struct TimerWatch {
  bool oneshot;
  int limit;
  int calls = 0;
  bool live = true;
};

// An AsyncEvent and the callback watching it.
struct EventWatch {
  AsyncEvent ev;
  bool closed = false;
  bool registered = false;
  bool triggered = false; // triggered since its callback last ran
  int epoch = 0;
  int limit = 1;
  int calls = 0;
};

// Identity of a rethrown error, and how many times poll rethrew it.
struct Rethrow {
  std::exception_ptr error;
  int count;
};

enum class Op : std::uint8_t {
  NewFuture,
  Complete,
  Fail,
  Cancel,
  And,
  Or,
  All,
  WithTimeout,
  Wait,
  Sleep,
  AddTimer,
  NewPair,
  Send,
  Recv,
  Shutdown,
  Close,
  Reregister,
  AddRaw,
  AwaitOne,
  ReadLoop,
  SleepLoop,
  Event,
  Poll,
  CallSoon,
  AsyncCheck,
  ReplaceCallbacks,
  Misuse,
  Read,
  Count
};

constexpr const char* kOpNames[] = {"NewFuture",  "Complete",
                                    "Fail",       "Cancel",
                                    "And",        "Or",
                                    "All",        "WithTimeout",
                                    "Wait",       "Sleep",
                                    "AddTimer",   "NewPair",
                                    "Send",       "Recv",
                                    "Shutdown",   "Close",
                                    "Reregister", "AddRaw",
                                    "AwaitOne",   "ReadLoop",
                                    "SleepLoop",  "Event",
                                    "Poll",       "CallSoon",
                                    "AsyncCheck", "ReplaceCallbacks",
                                    "Misuse",     "Read"};
static_assert(std::size(kOpNames) == static_cast<std::size_t>(Op::Count));

template <class F>
void expectValueError(const char* what, F&& call) {
  try {
    call();
  } catch (const ValueError&) {
    return;
  }
  violation(std::string(what) + ": misuse did not throw ValueError");
}

class Run;
Future<std::string> startRecvFor(Run& run, End& end, int size);
bool mayReadOn(const Run& run, const End& end);

// A coroutine awaiting any future: co_await must give back exactly the future's own outcome.
template <class T>
Future<int> awaitOne(Future<T> fut) {
  try {
    co_await fut;
  } catch (...) {
    if (!fut.failed() || std::current_exception() != fut.readError())
      violation("co_await threw something other than its future's error");
    throw;
  }
  if (!fut.finished() || fut.failed()) violation("co_await resumed before its future completed");
  co_return 1;
}

// A coroutine reading one end until the end of stream, an error or `reads` receives.
Future<int> readLoop(Run& run, End& end, int reads, int size) {
  int received = 0;
  for (int i = 0; i < reads && mayReadOn(run, end); ++i) {
    const std::string data = co_await startRecvFor(run, end, size);
    if (data.empty()) break;
    received += static_cast<int>(data.size());
  }
  co_return received;
}

// A coroutine sleeping several times in a row.
Future<int> sleepLoop(int rounds, double ms) {
  for (int i = 0; i < rounds; ++i)
    co_await sleepAsync(ms);
  co_return rounds;
}

class Run {
public:
  Run() : disp_(getGlobalDispatcher()) {}
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  void execute(ByteReader in) {
    for (int n = 0; n < kMaxOps && !in.empty(); ++n) {
      const auto op = static_cast<Op>(in.byte() % static_cast<int>(Op::Count));
      step(op, in);
      checkStep();
    }
  }

  // Cancels and closes everything, lets the loop settle, and checks that nothing is left.
  void teardown() {
    stopping_ = true;
    settleTraffic();
    for (Watch& w : watches_) {
      if (!baseOf(w.fut).finished()) baseOf(w.fut).cancel();
    }
    for (auto& pair : pairs_) {
      for (End& e : pair->ends) {
        if (e.open) closeEnd(e);
      }
    }
    for (EventWatch& e : events_) {
      if (!e.closed) closeEvent(e);
    }
    for (int pass = 0; hasPendingOperations(); ++pass) {
      if (pass == kTeardownPasses) violation("teardown: operations still pending");
      pollOnce(1, false);
    }
    flushDeadTimers();
    checkFinal();
  }

  bool stopping() const { return stopping_; }

  // A receive whose data is matched against what was sent, in the order the receives completed.
  Watch* startRecv(End& end, int size, SocketFlags flags, bool into, bool drain) {
    Watch* w = nullptr;
    if (into) {
      auto buffer = std::make_shared<std::vector<char>>(static_cast<std::size_t>(size));
      w = &addWatch(Kind::RecvInto,
                    asyncdispatch::recvInto(AsyncFD(end.fd), buffer->data(), size, flags));
      w->buffer = std::move(buffer);
    } else {
      w = &addWatch(Kind::Recv, asyncdispatch::recv(AsyncFD(end.fd), size, flags));
    }
    w->end = &end;
    w->peek = flags.contains(SocketFlag::Peek);
    w->drain = drain;
    if (baseOf(w->fut).finished()) violation("a receive finished before the loop ran");
    attachCounter(*w); // the first callback: the data is accounted before anyone awaits it
    return w;
  }

  bool roomForWatches() const { return watches_.size() < kMaxWatches; }

private:
  Watch& addWatch(Kind kind, AnyFuture fut) {
    if (baseOf(fut).isNil()) violation("the library returned a nil future");
    Watch& w = watches_.emplace_back();
    w.kind = kind;
    w.fut = std::move(fut);
    w.number = watches_.size() - 1;
    return w;
  }

  // Puts w where the operations can pick it, replacing the oldest when the pool is full.
  void pool(Watch& w) {
    if (pool_.size() < kPoolSize) {
      pool_.push_back(&w);
    } else {
      pool_[poolNext_++ % kPoolSize] = &w;
    }
  }

  Watch& track(Kind kind, AnyFuture fut) {
    Watch& w = addWatch(kind, std::move(fut));
    attachCounter(w);
    pool(w);
    return w;
  }

  // A callback that counts its runs: exactly one, after the future finished, in order.
  template <class Attach>
  void counter(Watch& w, Attach attach) {
    const std::uint64_t seq = ++callbackSeq_;
    ++w.attached;
    std::visit(
        [&](const auto& f) {
          attach(f, [this, &w, seq, ran = false]() mutable { onCallback(w, seq, ran); });
        },
        w.fut);
  }
  void attachCounter(Watch& w) {
    counter(w, [](const auto& f, auto cb) { f.addCallback(std::move(cb)); });
  }

  void onCallback(Watch& w, std::uint64_t seq, bool& ran) {
    if (ran) violation("a callback of " + nameOf(w) + " ran twice");
    ran = true;
    if (!baseOf(w.fut).finished())
      violation("a callback of " + nameOf(w) + " ran before it finished");
    if (seq <= w.lastRunSeq) violation("the callbacks of " + nameOf(w) + " ran out of order");
    w.lastRunSeq = seq;
    ++w.runs;
    observe(w);
    if (w.runs == 1 && (w.kind == Kind::Recv || w.kind == Kind::RecvInto)) account(w);
  }

  // A finished future keeps its outcome; the first time it is seen finished, the outcome must
  // agree with how it was made.
  void observe(Watch& w) {
    const FutureBase& f = baseOf(w.fut);
    if (w.seenFinished) {
      if (!f.finished() || f.failed() != w.seenFailed ||
          (w.seenFailed && f.readError() != w.seenError))
        violation(nameOf(w) + " changed its outcome after it finished");
      return;
    }
    if (!f.finished()) return;
    w.seenFinished = true;
    w.seenFailed = f.failed();
    if (w.seenFailed) w.seenError = f.readError();
    checkOutcome(w);
  }

  static bool succeeded(const Watch& w) {
    const FutureBase& f = baseOf(w.fut);
    return f.finished() && !f.failed();
  }

  void checkOutcome(const Watch& w) {
    if (w.seenFailed) {
      const ErrorKind kind = errorKind(w.seenError);
      if (kind == ErrorKind::Other)
        violation(nameOf(w) + " failed with an unexpected error: " + describe(w.seenError));
      if (w.byHand || kind == ErrorKind::Cancelled) return;
      switch (w.kind) {
      case Kind::User:
      case Kind::Sleep:
        if (kind != ErrorKind::ByHand)
          violation(nameOf(w) + " failed with an error nobody gave it: " + describe(w.seenError));
        return;
      case Kind::Recv:
      case Kind::RecvInto:
      case Kind::Send:
        if (kind != ErrorKind::OS || !w.end->pair->disturbed)
          violation(nameOf(w) +
                    " failed on a socketpair nobody disturbed: " + describe(w.seenError));
        return;
      default:
        break;
      }
      if (w.inputs.empty()) return; // readLoop, sleepLoop: their operations' errors
      const bool fromInput = std::any_of(w.inputs.begin(), w.inputs.end(), [&](const Watch* in) {
        return baseOf(in->fut).failed() && baseOf(in->fut).readError() == w.seenError;
      });
      if (!fromInput)
        violation(nameOf(w) +
                  " failed with an error none of its inputs has: " + describe(w.seenError));
      return;
    }
    if (w.byHand) {
      if (w.value && std::get<Future<int>>(w.fut).read() != *w.value)
        violation(nameOf(w) + " reads another value than it was completed with");
      return;
    }
    switch (w.kind) {
    case Kind::Sleep:
      if (Clock::now() < w.earliest) violation(nameOf(w) + " fired before its deadline");
      break;
    case Kind::And:
    case Kind::All:
    case Kind::Coroutine:
      for (const Watch* in : w.inputs) {
        if (!succeeded(*in))
          violation(nameOf(w) + " completed while its input " + nameOf(*in) + " has not");
      }
      if (w.kind == Kind::All && std::holds_alternative<Future<std::vector<int>>>(w.fut)) {
        const std::vector<int> values = std::get<Future<std::vector<int>>>(w.fut).read();
        if (values.size() != w.inputs.size()) violation(nameOf(w) + " has the wrong count");
        for (std::size_t i = 0; i < values.size(); ++i) {
          if (values[i] != std::get<Future<int>>(w.inputs[i]->fut).read())
            violation(nameOf(w) + " has a value its input does not");
        }
      }
      break;
    case Kind::Or:
      if (std::none_of(w.inputs.begin(), w.inputs.end(),
                       [](const Watch* in) { return succeeded(*in); }))
        violation(nameOf(w) + " completed while neither input has");
      break;
    case Kind::Timeout:
      if (std::get<Future<bool>>(w.fut).read()) {
        if (!succeeded(*w.inputs[0])) violation(nameOf(w) + " is true but its future has not won");
      } else if (Clock::now() < w.earliest) {
        violation(nameOf(w) + " timed out before its deadline");
      }
      break;
    default:
      break;
    }
  }

  // A completed receive: its bytes must be the next ones sent the other way.
  void account(Watch& w) {
    Pair& pair = *w.end->pair;
    Direction& dir = pair.dirs[1 - w.end->side];
    if (w.drain) dir.drainPending = false;
    if (baseOf(w.fut).failed()) return;
    std::string data;
    if (w.kind == Kind::Recv) {
      data = std::get<Future<std::string>>(w.fut).read();
    } else {
      const int n = std::get<Future<int>>(w.fut).read();
      if (n < 0 || static_cast<std::size_t>(n) > w.buffer->size())
        violation(nameOf(w) + " reports " + std::to_string(n) + " bytes");
      data.assign(w.buffer->data(), static_cast<std::size_t>(n));
    }
    if (data.empty()) {
      if (!pair.disturbed) violation("end of stream on a socketpair nobody closed or shut down");
      return;
    }
    consume(dir, data, w.peek, w);
  }

  static void consume(Direction& dir, std::string_view data, bool peek, const Watch& by) {
    std::size_t seg = dir.seg;
    std::size_t off = dir.off;
    for (char b : data) {
      for (;;) {
        if (seg == dir.segs.size()) violation(nameOf(by) + " received a byte that was never sent");
        const Segment& s = dir.segs[seg];
        if (b == (*s.data)[off]) {
          if (++off == s.data->size()) {
            ++seg;
            off = 0;
          }
          break;
        }
        // Only a send that failed may stop short; the next byte then starts a later send.
        if (!baseOf(s.send->fut).failed())
          violation(nameOf(by) + " received bytes out of order or corrupted (in " +
                    nameOf(*s.send) + " at byte " + std::to_string(off) + ")");
        ++seg;
        off = 0;
      }
    }
    if (!peek) {
      dir.seg = seg;
      dir.off = off;
    }
  }

  // Every send from the cursor on has failed: nothing more is owed to the receiver.
  static bool receivedAll(const Direction& dir) {
    return std::all_of(dir.segs.begin() + static_cast<std::ptrdiff_t>(dir.seg), dir.segs.end(),
                       [](const Segment& s) { return baseOf(s.send->fut).failed(); });
  }

  // A poll (or drain) that may only throw what it is documented to throw.
  void pollOnce(int timeout, bool useDrain) {
    const bool pending = hasPendingOperations();
    try {
      if (useDrain) {
        drain(timeout);
      } else {
        asyncdispatch::poll(timeout);
        if (!pending) violation("poll with nothing pending did not throw");
      }
    } catch (const ValueError& e) {
      if (useDrain || pending ||
          std::string_view(e.what()) != "No handles or timers registered in dispatcher.")
        violation(std::string("poll threw ValueError: ") + e.what());
    } catch (...) {
      noteRethrown(std::current_exception());
    }
  }

  void noteRethrown(const std::exception_ptr& e) {
    const bool checked = std::any_of(watches_.begin(), watches_.end(), [&](const Watch& w) {
      return w.asyncChecks > 0 && baseOf(w.fut).failed() && baseOf(w.fut).readError() == e;
    });
    if (!checked) violation("poll threw an error no asyncCheck'd future has: " + describe(e));
    for (Rethrow& r : rethrown_) {
      if (r.error == e) {
        ++r.count;
        return;
      }
    }
    rethrown_.push_back(Rethrow{e, 1});
  }

  int registeredDescriptors() const {
    int n = 0;
    for (const auto& key : disp_->selector.fds)
      n += key.fd != InvalidIdent ? 1 : 0;
    return n;
  }

  void checkStep() {
    for (Watch* w : pool_)
      observe(*w);
    const Dispatcher& p = *disp_;
    std::size_t dead = 0;
    for (const TimerEntry& t : p.timers)
      dead += detail::stateOf(t.fut).cancelled ? 1 : 0;
    if (dead != p.cancelledTimers)
      violation("cancelledTimers is " + std::to_string(p.cancelledTimers) + " but " +
                std::to_string(dead) + " timers are cancelled");
    int registered = 0;
    int armed = 0;
    for (const auto& key : p.selector.fds) {
      if (key.fd == InvalidIdent) continue;
      ++registered;
      if (!key.events.empty() && !key.events.contains(Event::Finished)) ++armed;
    }
    if (armed != p.selector.count || armed != activeDescriptors())
      violation("the selector's count (" + std::to_string(p.selector.count) +
                ") disagrees with its armed keys (" + std::to_string(armed) + ")");
    int expected = 0;
    for (const auto& pair : pairs_) {
      for (const End& e : pair->ends)
        expected += e.open ? 1 : 0;
    }
    for (const EventWatch& e : events_)
      expected += e.registered ? 1 : 0;
    for (const TimerWatch& t : timers_)
      expected += t.live ? 1 : 0;
    if (registered != expected)
      violation("the selector holds " + std::to_string(registered) + " keys where " +
                std::to_string(expected) + " sockets, events and timers are registered");
  }

  void checkFinal() {
    for (Watch& w : watches_) {
      observe(w);
      if (!w.seenFinished) violation(nameOf(w) + " never finished");
      if (w.runs != w.attached)
        violation(nameOf(w) + ": " + std::to_string(w.runs) + " of its " +
                  std::to_string(w.attached) + " callbacks ran");
    }
    // Each asyncCheck of a future that failed rethrows its error from poll exactly once.
    std::vector<Rethrow> expected;
    for (const Watch& w : watches_) {
      if (w.asyncChecks == 0 || !w.seenFailed) continue;
      auto it = std::find_if(expected.begin(), expected.end(),
                             [&](const Rethrow& r) { return r.error == w.seenError; });
      if (it == expected.end()) {
        expected.push_back(Rethrow{w.seenError, w.asyncChecks});
      } else {
        it->count += w.asyncChecks;
      }
    }
    for (const Rethrow& r : expected) {
      auto it = std::find_if(rethrown_.begin(), rethrown_.end(),
                             [&](const Rethrow& x) { return x.error == r.error; });
      const int got = it == rethrown_.end() ? 0 : it->count;
      if (got != r.count)
        violation("an asyncCheck'd failure was rethrown " + std::to_string(got) + " times, not " +
                  std::to_string(r.count) + ": " + describe(r.error));
    }
    if (rethrown_.size() > expected.size())
      violation("poll rethrew an error more often than asyncCheck'd");
    for (const RawWatch& r : raws_) {
      if (r.live) violation("an addRead/addWrite callback was never removed");
    }
    for (const TimerWatch& t : timers_) {
      if (t.live) violation("an addTimer callback was never removed");
    }
    if (callSoonsWaiting_ != 0) violation("a callSoon callback never ran");
    const Dispatcher& p = *disp_;
    if (registeredDescriptors() != 0) violation("teardown: descriptors still registered");
    if (!p.timers.empty()) violation("teardown: timers left in the heap");
    if (p.cancelledTimers != 0) violation("teardown: cancelledTimers is not 0");
    if (!p.callbacks.empty()) violation("teardown: callbacks still queued");
    if (!p.suspended.empty()) violation("teardown: coroutines still suspended");
    if (activeDescriptors() != 0) violation("teardown: activeDescriptors is not 0");
    if (hasPendingOperations()) violation("teardown: hasPendingOperations is true");
  }

  // Receives until every byte sent on a pair nobody disturbed has arrived.
  void settleTraffic() {
    for (int pass = 0;; ++pass) {
      bool owed = false;
      for (auto& pair : pairs_) {
        if (pair->disturbed) continue;
        for (int d = 0; d < 2; ++d) {
          Direction& dir = pair->dirs[d];
          if (receivedAll(dir)) continue;
          owed = true;
          if (!dir.drainPending) {
            dir.drainPending = true;
            startRecv(pair->ends[1 - d], kMaxSend, SocketFlag::SafeDisconn, false, true);
          }
        }
      }
      if (!owed) return;
      if (pass == kSettlePasses) violation("bytes sent on an undisturbed socketpair never arrived");
      pollOnce(1, false);
    }
  }

  // Cancelled sleeps stay in the heap until they come to its top (by design: the heap drops
  // them lazily), and poll refuses to run when only they are left: one more sleep, due after
  // all of them, makes the loop pop them.
  void flushDeadTimers() {
    const Dispatcher& p = *disp_;
    if (p.timers.empty()) return;
    Clock::time_point latest = Clock::now();
    for (const TimerEntry& t : p.timers)
      latest = std::max(latest, t.finishAt);
    const double ms = std::chrono::duration<double, std::milli>(latest - Clock::now()).count();
    const Future<void> flush = sleepAsync(std::max(ms, 0.0) + 0.001);
    for (int pass = 0; !flush.finished(); ++pass) {
      if (pass == kTeardownPasses) violation("teardown: a sleep never fired");
      pollOnce(1, false);
    }
  }

  End* pickEnd(ByteReader& in) {
    const std::uint8_t b = in.byte();
    if (pairs_.empty()) return nullptr;
    End& e = pairs_[(b >> 1) % pairs_.size()]->ends[b & 1];
    return e.open ? &e : nullptr;
  }

  // closeSocket or unregister of one end: each addRead/addWrite callback still waiting is
  // called exactly once meanwhile, and never again.
  template <class F>
  void abandon(End& e, F&& call) {
    e.pair->disturbed = true;
    e.abandoning = true;
    call();
    e.abandoning = false;
    for (const RawWatch& r : raws_) {
      if (r.end == &e && r.epoch == e.epoch && r.live)
        violation("closeSocket/unregister did not call a waiting addRead/addWrite callback");
    }
    ++e.epoch;
  }

  void closeEnd(End& e) {
    abandon(e, [&] { closeSocket(AsyncFD(e.fd)); });
    e.open = false;
  }

  bool onRaw(RawWatch& r, AsyncFD fd) {
    if (!r.live) violation("an addRead/addWrite callback ran after it was removed");
    if (r.epoch != r.end->epoch)
      violation("an addRead/addWrite callback ran after its descriptor was closed or unregistered");
    if (fd != AsyncFD(r.end->fd)) violation("an addRead/addWrite callback got another descriptor");
    ++r.calls;
    if (r.end->abandoning) {
      if (r.abandonCall) violation("closeSocket/unregister called a callback twice");
      r.abandonCall = true;
      r.live = false;
      return true;
    }
    if (stopping_ || r.calls >= r.limit) {
      r.live = false;
      return true;
    }
    return false;
  }

  bool onEvent(EventWatch& e, int epoch) {
    if (!e.registered || e.epoch != epoch || e.closed)
      violation("an event callback ran after it was removed, unregistered or closed");
    if (!e.triggered) violation("an event callback ran without a trigger");
    e.triggered = false;
    ++e.calls;
    const bool done = stopping_ || e.calls >= e.limit;
    if (done) {
      e.registered = false;
      ++e.epoch;
    }
    return done;
  }

  void closeEvent(EventWatch& e) {
    asyncdispatch::close(e.ev);
    e.closed = true;
    e.registered = false;
    ++e.epoch;
  }

  bool onTimer(TimerWatch& t) {
    if (!t.live) violation("an addTimer callback ran after it was removed");
    ++t.calls;
    const bool done = stopping_ || t.calls >= t.limit;
    if (done || t.oneshot) t.live = false;
    return done;
  }

  Watch* pick(ByteReader& in) {
    const std::uint8_t b = in.byte();
    return pool_.empty() ? nullptr : pool_[b % pool_.size()];
  }

  void note(Op op, int a = 0, int b = 0, int c = 0) {
    trace.push_back(TraceEntry{kOpNames[static_cast<int>(op)], a, b, c});
  }

  static int num(const Watch* w) { return w ? static_cast<int>(w->number) : -1; }

  void step(Op op, ByteReader& in) {
    switch (op) {
    case Op::NewFuture:
      note(op);
      if (roomForWatches()) track(Kind::User, newFuture<int>("fuzz"));
      return;
    case Op::Complete:
    case Op::Fail: {
      Watch* w = pick(in);
      const int value = in.byte();
      note(op, num(w), value);
      if (w && completableByHand(w->kind)) finishByHand(*w, op == Op::Complete, value);
      return;
    }
    case Op::Cancel: {
      Watch* w = pick(in);
      note(op, num(w));
      if (w) cancel(*w);
      return;
    }
    case Op::And:
    case Op::Or: {
      Watch* a = pick(in);
      Watch* b = pick(in);
      note(op, num(a), num(b));
      if (!a || !b || !roomForWatches()) return;
      Future<void> r =
          std::visit([op](const auto& x, const auto& y) { return op == Op::And ? x && y : x || y; },
                     a->fut, b->fut);
      Watch& w = track(op == Op::And ? Kind::And : Kind::Or, r);
      w.inputs = {a, b};
      return;
    }
    case Op::All:
      allOf(in);
      return;
    case Op::WithTimeout:
    case Op::Wait: {
      Watch* w = pick(in);
      const int ms = in.below(3);
      note(op, num(w), ms);
      if (!w || !roomForWatches()) return;
      const Clock::time_point before = Clock::now();
      Future<bool> r = std::visit(
          [&](const auto& f) {
            return op == Op::Wait ? asyncdispatch::wait(f, ms) : withTimeout(f, ms);
          },
          w->fut);
      Watch& t = track(Kind::Timeout, r);
      t.inputs = {w};
      t.earliest = before + std::chrono::milliseconds(ms);
      return;
    }
    case Op::Sleep: {
      const int code = in.below(16);
      note(op, code);
      if (!roomForWatches()) return;
      const Clock::time_point before = Clock::now();
      // Whole, negative and fractional delays: they take different paths to the heap.
      const double ms = code < 3 ? code : code == 3 ? -5.0 : (code - 4) * 0.18;
      Future<void> f = code <= 3 ? sleepAsync(static_cast<int>(ms)) : sleepAsync(ms);
      Watch& w = track(Kind::Sleep, f);
      w.earliest = before + std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double, std::milli>(std::max(ms, 0.0)));
      return;
    }
    case Op::AddTimer: {
      const int ms = 1 + in.below(2);
      const std::uint8_t mode = in.byte();
      note(op, ms, mode);
      if (timers_.size() >= kMaxTimers) return;
      TimerWatch& t = timers_.emplace_back(TimerWatch{(mode & 1) != 0, 1 + (mode >> 1) % 4});
      addTimer(ms, t.oneshot, [this, &t](AsyncFD) { return onTimer(t); });
      return;
    }
    case Op::NewPair:
      note(op);
      newPair();
      return;
    case Op::Send:
      sendOn(in);
      return;
    case Op::Recv:
      recvOn(in);
      return;
    case Op::Shutdown: {
      End* e = pickEnd(in);
      const int how = in.below(3);
      note(op, e ? e->fd : -1, how);
      if (!e) return;
      e->pair->disturbed = true;
      ::shutdown(e->fd, how == 0 ? SHUT_RD : how == 1 ? SHUT_WR : SHUT_RDWR);
      return;
    }
    case Op::Close: {
      End* e = pickEnd(in);
      note(op, e ? e->fd : -1);
      if (e) closeEnd(*e);
      return;
    }
    case Op::Reregister: {
      End* e = pickEnd(in);
      note(op, e ? e->fd : -1);
      if (!e) return;
      abandon(*e, [&] { unregister(AsyncFD(e->fd)); });
      register_(AsyncFD(e->fd));
      return;
    }
    case Op::AddRaw: {
      End* e = pickEnd(in);
      const std::uint8_t mode = in.byte();
      note(op, e ? e->fd : -1, mode);
      if (!e || raws_.size() >= kMaxRaw) return;
      RawWatch& r = raws_.emplace_back(RawWatch{e, e->epoch, 1 + (mode >> 1) % 4});
      auto cb = [this, &r](AsyncFD fd) { return onRaw(r, fd); };
      if ((mode & 1) != 0) {
        addWrite(AsyncFD(e->fd), cb);
      } else {
        addRead(AsyncFD(e->fd), cb);
      }
      return;
    }
    case Op::AwaitOne: {
      Watch* w = pick(in);
      note(op, num(w));
      if (!w || !roomForWatches()) return;
      Future<int> c = std::visit([](const auto& f) { return awaitOne(f); }, w->fut);
      track(Kind::Coroutine, c).inputs = {w};
      return;
    }
    case Op::ReadLoop: {
      End* e = pickEnd(in);
      const std::uint8_t mode = in.byte();
      note(op, e ? e->fd : -1, mode);
      if (!e || !roomForWatches()) return;
      const int size = (mode & 0x80) != 0 ? kMaxSend : 1 + (mode & 0x0F) * 37;
      track(Kind::Coroutine, readLoop(*this, *e, 1 + ((mode >> 4) & 7), size));
      return;
    }
    case Op::SleepLoop: {
      const std::uint8_t mode = in.byte();
      note(op, mode);
      if (!roomForWatches()) return;
      track(Kind::Coroutine, sleepLoop(1 + mode % 4, ((mode >> 2) % 12) * 0.18));
      return;
    }
    case Op::Event:
      eventOp(in);
      return;
    case Op::Poll: {
      const std::uint8_t mode = in.byte();
      int timeout = mode % 3;
      if (timeout > 0 && ++blockingPolls_ > kMaxBlockingPolls) timeout = 0;
      note(op, timeout, (mode & 4) != 0);
      pollOnce(timeout, (mode & 4) != 0);
      return;
    }
    case Op::CallSoon: {
      const bool nested = (in.byte() & 1) != 0;
      note(op, nested);
      ++callSoonsWaiting_;
      callSoon([this, ran = false, nested]() mutable {
        if (ran) violation("a callSoon callback ran twice");
        ran = true;
        --callSoonsWaiting_;
        if (nested) expectValueError("poll inside a callback", [] { asyncdispatch::poll(0); });
      });
      return;
    }
    case Op::AsyncCheck: {
      Watch* w = pick(in);
      note(op, num(w));
      if (!w) return;
      std::visit([](const auto& f) { asyncCheck(f); }, w->fut);
      ++w->asyncChecks;
      return;
    }
    case Op::ReplaceCallbacks: {
      Watch* w = pick(in);
      const bool clear = (in.byte() & 1) != 0;
      note(op, num(w), clear);
      // Only a future made by newFuture: the library's futures need their own callbacks.
      if (w && w->kind == Kind::User) replaceCallbacks(*w, clear);
      return;
    }
    case Op::Misuse:
      misuse(in);
      return;
    case Op::Read: {
      Watch* w = pick(in);
      note(op, num(w));
      if (w) read(*w);
      return;
    }
    case Op::Count:
      break;
    }
  }

  void finishByHand(Watch& w, bool complete, int value) {
    const bool wasFinished = baseOf(w.fut).finished();
    try {
      if (complete) {
        std::visit(
            [&](const auto& f) {
              using T = typename std::decay_t<decltype(f)>::value_type;
              if constexpr (std::is_void_v<T>) {
                f.complete();
              } else if constexpr (std::is_same_v<T, int>) {
                f.complete(value);
              } else if constexpr (std::is_same_v<T, bool>) {
                f.complete(value % 2 == 0);
              } else {
                f.complete(T{});
              }
            },
            w.fut);
      } else {
        baseOf(w.fut).fail(HandFailure("fuzz: failed by hand"));
      }
    } catch (const FutureError&) {
      if (!wasFinished) violation("finishing a pending future threw FutureError");
      return;
    }
    if (wasFinished) violation("finishing a finished future did not throw FutureError");
    w.byHand = true;
    if (complete && w.kind == Kind::User) w.value = value;
  }

  void cancel(Watch& w) {
    const FutureBase& f = baseOf(w.fut);
    const bool wasFinished = f.finished();
    f.cancel();
    if (wasFinished || w.kind == Kind::Coroutine) return; // a coroutine unwinds on a later pass
    if (!f.finished()) violation("cancel() left " + nameOf(w) + " pending");
    if (errorKind(f.readError()) != ErrorKind::Cancelled)
      violation("cancel() failed " + nameOf(w) + " without CancelledError");
  }

  void allOf(ByteReader& in) {
    const std::uint8_t mode = in.byte();
    const int count = (mode >> 1) % 5;
    Watch* picked[4];
    for (Watch*& w : picked)
      w = pick(in);
    note(Op::All, mode & 1, count);
    if (!roomForWatches()) return;
    std::vector<const Watch*> inputs;
    if ((mode & 1) == 0) {
      std::vector<Future<int>> futs;
      for (int i = 0; i < count; ++i) {
        if (picked[i] && std::holds_alternative<Future<int>>(picked[i]->fut)) {
          futs.push_back(std::get<Future<int>>(picked[i]->fut));
          inputs.push_back(picked[i]);
        }
      }
      track(Kind::All, all(std::move(futs))).inputs = std::move(inputs);
    } else {
      std::vector<Future<void>> futs;
      for (int i = 0; i < count; ++i) {
        if (picked[i] && std::holds_alternative<Future<void>>(picked[i]->fut)) {
          futs.push_back(std::get<Future<void>>(picked[i]->fut));
          inputs.push_back(picked[i]);
        }
      }
      track(Kind::All, all(std::move(futs))).inputs = std::move(inputs);
    }
  }

  void newPair() {
    if (pairs_.size() >= kMaxPairs) return;
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
      violation("socketpair failed");
    auto pair = std::make_unique<Pair>();
    for (int s = 0; s < 2; ++s) {
      End& e = pair->ends[s];
      e.pair = pair.get();
      e.side = s;
      e.fd = sv[s];
      register_(AsyncFD(e.fd));
    }
    pairs_.push_back(std::move(pair));
  }

  static int sizeFrom(std::uint8_t code, std::uint8_t low) {
    if ((code & 0x80) == 0) return 1 + (code & 0x7F);
    return 1 + (((code & 0x7F) << 8 | low) * 2) % kMaxSend;
  }

  void sendOn(ByteReader& in) {
    End* e = pickEnd(in);
    const std::uint8_t code = in.byte();
    const std::uint8_t low = in.byte();
    const std::uint8_t mode = in.byte();
    const int size = sizeFrom(code, low);
    note(Op::Send, e ? e->fd : -1, (mode & 4) != 0 ? 0 : size, mode);
    if (!e || !roomForWatches()) return;
    const SocketFlags flags =
        (mode & 1) != 0 ? SocketFlags{} : SocketFlags(SocketFlag::SafeDisconn);
    const AsyncFD fd = AsyncFD(e->fd);
    if ((mode & 4) != 0) { // an empty send completes at once and sends nothing
      Future<void> f = asyncdispatch::send(fd, std::string(), flags);
      if (!f.finished() || f.failed()) violation("send of 0 bytes did not complete at once");
      return;
    }
    Direction& dir = e->pair->dirs[e->side];
    if (dir.segs.size() >= kMaxSendsPerDirection || bytesSent_ + size > kMaxBytesPerInput) return;
    bytesSent_ += static_cast<std::size_t>(size);
    auto data = std::make_shared<std::string>(static_cast<std::size_t>(size), '\0');
    for (std::size_t j = 0; j < data->size(); ++j)
      (*data)[j] = segmentByte(dir.segs.size(), j);
    Future<void> f = (mode & 2) != 0 ? asyncdispatch::send(fd, std::string(*data), flags)
                                     : asyncdispatch::send(fd, data->data(), size, flags);
    Watch& w = track(Kind::Send, f);
    w.end = e;
    dir.segs.push_back(Segment{std::move(data), &w});
  }

  void recvOn(ByteReader& in) {
    End* e = pickEnd(in);
    const std::uint8_t code = in.byte();
    const std::uint8_t low = in.byte();
    const std::uint8_t mode = in.byte();
    const int size = sizeFrom(code, low);
    note(Op::Recv, e ? e->fd : -1, size, mode);
    if (!e || !roomForWatches()) return;
    SocketFlags flags = SocketFlag::SafeDisconn;
    if ((mode & 6) == 2) flags = SocketFlags{};
    if ((mode & 6) == 6) flags = SocketFlags{SocketFlag::Peek, SocketFlag::SafeDisconn};
    pool(*startRecv(*e, size, flags, (mode & 1) != 0, false));
  }

  void eventOp(ByteReader& in) {
    const std::uint8_t mode = in.byte();
    const int sub = mode % 5;
    const std::size_t index = (mode >> 3) % kMaxEvents;
    const int limit = 1 + in.below(4);
    note(Op::Event, sub, static_cast<int>(index), limit);
    if (sub == 0) {
      if (events_.size() < kMaxEvents) events_.emplace_back().ev = newAsyncEvent();
      return;
    }
    if (index >= events_.size()) return;
    EventWatch& e = events_[index];
    switch (sub) {
    case 1:
      if (e.closed || e.registered) {
        expectValueError("addEvent", [&] { addEvent(e.ev, [](AsyncFD) { return true; }); });
        return;
      }
      e.limit = limit;
      e.calls = 0;
      e.registered = true;
      addEvent(e.ev, [this, &e, epoch = e.epoch](AsyncFD) { return onEvent(e, epoch); });
      return;
    case 2:
      if (e.closed) {
        expectValueError("trigger", [&] { trigger(e.ev); });
        return;
      }
      trigger(e.ev);
      e.triggered = true;
      return;
    case 3:
      if (e.closed || !e.registered) {
        expectValueError("unregister(ev)", [&] { unregister(e.ev); });
        return;
      }
      unregister(e.ev);
      e.registered = false;
      ++e.epoch;
      return;
    default:
      if (e.closed) {
        asyncdispatch::close(e.ev); // closing twice does nothing
        return;
      }
      closeEvent(e);
      return;
    }
  }

  void replaceCallbacks(Watch& w, bool clear) {
    const bool pending = !baseOf(w.fut).finished();
    if (clear) {
      baseOf(w.fut).clearCallbacks();
    } else {
      counter(w, [](const auto& f, auto cb) { f.callback(std::move(cb)); });
    }
    // A pending future's callbacks go without running (a finished one has none left to drop).
    if (pending) {
      w.attached = clear ? 0 : 1;
      w.asyncChecks = 0;
    }
  }

  void read(Watch& w) {
    const FutureBase& f = baseOf(w.fut);
    if (!f.finished()) {
      expectValueError("read of a pending future",
                       [&] { std::visit([](const auto& x) { (void)x.read(); }, w.fut); });
      return;
    }
    try {
      std::visit([](const auto& x) { (void)x.read(); }, w.fut);
    } catch (...) {
      if (!f.failed() || std::current_exception() != f.readError())
        violation("read() of " + nameOf(w) + " threw something other than its error");
      return;
    }
    if (f.failed()) violation("read() of failed " + nameOf(w) + " did not throw");
    expectValueError("readError of a future without error", [&] { (void)f.readError(); });
  }

  void misuse(ByteReader& in) {
    const int which = in.below(16);
    End* e = pickEnd(in);
    note(Op::Misuse, which, e ? e->fd : -1);
    const AsyncFD open = e ? AsyncFD(e->fd) : kUnregistered;
    switch (which) {
    case 0:
      if (e) expectValueError("recv of size 0", [&] { (void)asyncdispatch::recv(open, 0); });
      return;
    case 1:
      expectValueError("recv, unregistered", [] { (void)asyncdispatch::recv(kUnregistered, 16); });
      return;
    case 2:
      expectValueError("send, unregistered",
                       [] { (void)asyncdispatch::send(kUnregistered, std::string("x")); });
      return;
    case 3:
      if (e) expectValueError("register_ twice", [&] { register_(open); });
      return;
    case 4:
      expectValueError("unregister, unknown", [] { unregister(kUnregistered); });
      return;
    case 5:
      expectValueError("closeSocket, unregistered", [] { closeSocket(kUnregistered); });
      return;
    case 6:
      expectValueError("addRead, unregistered", [] {
        addRead(kUnregistered,
                [](AsyncFD) -> bool { violation("a refused addRead callback ran"); });
      });
      return;
    case 7:
      expectValueError("withTimeout of nil", [] { (void)withTimeout(Future<int>(), 1); });
      return;
    case 8:
      expectValueError("addTimer of 0 ms", [] {
        addTimer(0, true, [](AsyncFD) -> bool { violation("a refused addTimer callback ran"); });
      });
      return;
    case 9:
      expectValueError("sleepAsync(NaN)",
                       [] { (void)sleepAsync(std::numeric_limits<double>::quiet_NaN()); });
      return;
    case 10:
      expectValueError("a nil future", [] { (void)Future<int>().finished(); });
      return;
    case 11: {
      std::ostringstream out;
      dumpDispatcher(out);
      return;
    }
    case 12:
      if (e) {
        expectValueError("recvInto of null",
                         [&] { (void)asyncdispatch::recvInto(open, nullptr, 4); });
        char buf[4];
        expectValueError("recvInto of -1", [&] { (void)asyncdispatch::recvInto(open, buf, -1); });
      }
      return;
    case 13:
      if (e) {
        expectValueError("send of null", [&] { (void)asyncdispatch::send(open, nullptr, 5); });
        expectValueError("send of -1", [&] { (void)asyncdispatch::send(open, "abc", -1); });
      }
      return;
    case 14:
      expectValueError("register_(-1)", [] { register_(AsyncFD(-1)); });
      return;
    default:
      expectValueError("asyncCheck of nil", [] { asyncCheck(Future<int>()); });
      return;
    }
  }

  PDispatcher disp_;
  std::deque<Watch> watches_;
  std::vector<Watch*> pool_;
  std::size_t poolNext_ = 0;
  std::vector<std::unique_ptr<Pair>> pairs_;
  std::deque<RawWatch> raws_;
  std::deque<TimerWatch> timers_;
  std::deque<EventWatch> events_;
  std::vector<Rethrow> rethrown_;
  std::uint64_t callbackSeq_ = 0;
  std::size_t bytesSent_ = 0;
  int blockingPolls_ = 0;
  int callSoonsWaiting_ = 0;
  bool stopping_ = false;
};

Future<std::string> startRecvFor(Run& run, End& end, int size) {
  return std::get<Future<std::string>>(
      run.startRecv(end, size, SocketFlag::SafeDisconn, false, false)->fut);
}

bool mayReadOn(const Run& run, const End& end) {
  return end.open && !run.stopping() && run.roomForWatches();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  getGlobalDispatcher(); // made once, before the descriptors are counted
  const int descriptors = openDescriptors();
  trace.clear();
  try {
    Run run;
    run.execute(ByteReader(data, size));
    run.teardown();
  } catch (const std::exception& e) {
    violation(std::string("unexpected exception: ") + e.what());
  } catch (...) {
    violation("unexpected exception of a non-standard type");
  }
  if (openDescriptors() != descriptors)
    violation("the input leaked descriptors: " + std::to_string(descriptors) + " before, " +
              std::to_string(openDescriptors()) + " after");
  return 0;
}
