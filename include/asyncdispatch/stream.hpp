// Nim's FutureStream (asyncstreams): an unbounded queue of values between a producer that writes
// and a consumer that awaits read(). Single-threaded like everything on a dispatcher.
#pragma once

#include <deque>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include "errors.hpp"
#include "future.hpp"

namespace asyncdispatch {

/// Nim's FutureStream[T]: values written by one side, awaited in order by the other.
template <class T>
class FutureStream {
public:
  FutureStream() = default; ///< nil, like a default Future; use newFutureStream

  /// Nim's write: queues value (no backpressure) and returns a finished future; a stream that is
  /// finished gives a failed one instead (Nim's message). A waiting read gets the value at once.
  Future<void> write(T value) const {
    State& s = state();
    Future<void> done = newFuture<void>("FutureStream.write");
    if (s.finished) {
      done.fail(ValueError("FutureStream is finished and so no longer accepts new data."));
      return done;
    }
    s.queue.push_back(std::move(value));
    s.serveReaders();
    done.complete();
    return done;
  }

  /// Nim's complete: no more values; reads get (false, T{}) once the queue is empty. Completing
  /// twice is allowed; completing a failed stream throws ValueError (Nim asserts).
  void complete() const {
    State& s = state();
    if (s.error) throw ValueError("FutureStream.complete: Trying to complete failed stream");
    s.finished = true;
    s.serveReaders();
  }

  /// Nim's fail: the stream ends with an error, which reads get once the queue is empty.
  void fail(std::exception_ptr error) const {
    State& s = state();
    if (s.finished) throw ValueError("FutureStream.fail: the stream is already finished");
    if (!error) throw ValueError("FutureStream.fail: the exception_ptr is empty");
    s.finished = true;
    s.error = std::move(error);
    s.serveReaders();
  }

  /// Nim's read: (true, value) for the next value, (false, T{}) once the stream is complete and
  /// empty; fails with the stream's error. Beyond Nim, several pending reads are served in order,
  /// and cancelling a pending read takes it out of the line.
  Future<std::pair<bool, T>> read() const {
    State& s = state();
    Future<std::pair<bool, T>> next = newFuture<std::pair<bool, T>>("FutureStream.read");
    detail::stateOf(next).setCancelHook(detail::CancelHook::object(&s));
    s.readers.push_back(next);
    s.serveReaders();
    return next;
  }

  /// Nim's finished: complete (or failed) and nothing left to read.
  bool finished() const { return state().finished && state().queue.empty(); }
  /// Nim's failed: the stream ended with an error.
  bool failed() const { return state().error != nullptr; }
  /// Nim's len: how many values wait to be read.
  std::size_t len() const { return state().queue.size(); }

private:
  template <class U>
  friend FutureStream<U> newFutureStream(const char* fromProc);

  struct State final : detail::Canceller {
    State() = default;
    State(const State&) = delete;
    State& operator=(const State&) = delete;
    // Reads still pending when the last handle goes must not point back at the freed stream.
    ~State() {
      for (const Future<std::pair<bool, T>>& r : readers)
        detail::stateOf(r).setCancelHook(detail::CancelHook());
    }

    // fut.cancel() of a pending read: it leaves the line and fails; the values stay queued.
    void cancel(detail::FutureStateBase& fut) override {
      for (auto it = readers.begin(); it != readers.end(); ++it) {
        if (&detail::stateOf(*it) != &fut) continue;
        Future<std::pair<bool, T>> r = std::move(*it);
        readers.erase(it);
        r.fail(CancelledError("FutureStream.read: cancelled"));
        return;
      }
    }

    std::deque<T> queue;
    std::deque<Future<std::pair<bool, T>>> readers; // pending reads, oldest first
    bool finished = false;
    std::exception_ptr error;

    // Hands queued values, then the end or the error, to the pending reads in order. Completing
    // a read only queues its callbacks, so nothing runs inside write/complete/fail.
    void serveReaders() {
      while (!readers.empty()) {
        Future<std::pair<bool, T>> next = std::move(readers.front());
        if (!queue.empty()) {
          readers.pop_front();
          next.complete(std::pair<bool, T>(true, std::move(queue.front())));
          queue.pop_front();
        } else if (error) {
          readers.pop_front();
          next.fail(error);
        } else if (finished) {
          readers.pop_front();
          next.complete(std::pair<bool, T>(false, T{}));
        } else {
          readers.front() = std::move(next);
          return;
        }
      }
    }
  };

  explicit FutureStream(std::shared_ptr<State> s) : state_(std::move(s)) {}
  State& state() const {
    if (!state_) throw ValueError("FutureStream is nil: it was default-constructed");
    return *state_;
  }

  std::shared_ptr<State> state_;
};

/// Nim's newFutureStream[T](fromProc): an empty, open stream (fromProc is unused, as in Nim).
template <class T>
FutureStream<T> newFutureStream(const char* fromProc = "unspecified") {
  (void)fromProc;
  return FutureStream<T>(std::make_shared<typename FutureStream<T>::State>());
}

/// Nim's readAll: every string of the stream, concatenated, once it is complete; fails if the
/// stream fails.
Future<std::string> readAll(FutureStream<std::string> stream);

} // namespace asyncdispatch
