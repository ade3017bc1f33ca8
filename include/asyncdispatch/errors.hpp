// The error types of Nim's asyncdispatch, each deriving from the standard type closest to it so
// that C++ code can catch either the Nim name or the standard one.
#pragma once

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace asyncdispatch {

/// One coroutine an error left, as Nim's StackTraceEntry (procname, filename, line), linked to the
/// frames the error had left before it. Frames are immutable and shared: coroutines that await
/// one failed future each link their own frame to that future's chain, so each path keeps its own
/// chain and the stored error never grows.
struct TracebackFrame {
  const char* procname; ///< the coroutine's function, as __builtin_FUNCTION names it
  const char* filename; ///< the file that defines it
  int line;             ///< the line of its definition (GCC: the closing brace; clang: the name)
  std::shared_ptr<const TracebackFrame> inner; ///< the frame the error left before this one

  /// Frees the inner frames that only this one holds one at a time: a chain through a long
  /// pipeline of coroutines must not be freed by a recursion as deep as the chain.
  ~TracebackFrame() {
    std::shared_ptr<const TracebackFrame> next = std::move(inner);
    while (next && next.use_count() == 1)
      next = std::move(const_cast<TracebackFrame&>(*next).inner); // made non-const (make_shared)
  }
};
/// A chain of frames, by its outermost frame; null when the error left no coroutine.
using TracebackChain = std::shared_ptr<const TracebackFrame>;

namespace detail {
// "  file(line) proc\n" for each frame of the chain, innermost first (Nim's layout).
std::string formatTraceback(const TracebackFrame* outermost);
} // namespace detail

/// Nim's async traceback: the coroutines an error passed through on its way out, innermost first,
/// shown after the message in what(). Each failed future keeps the chain of its own path, and
/// reading the future (read, co_await, readError) shows that chain in the one error object, as
/// Nim's read rewrites the message of the one exception it re-raises. Every error type of the
/// library carries one; an application's own error type gets the same by deriving from
/// Traced<std::runtime_error> (or any std exception). Other exception types pass through
/// coroutines unchanged.
class AsyncTraceback {
public:
  /// The chain shown now, one `"  file(line) coroutine"` line each, innermost first; empty if the
  /// error was not read from a future whose path left a coroutine.
  virtual const std::string& traceback() const noexcept = 0;
  /// The chain shown now (null if none).
  virtual const TracebackChain& chain() const noexcept = 0;
  /// Shows `chain` in what() and traceback() in place of the one shown before (Nim's
  /// injectStacktrace strips the old traceback first, so re-reading never accumulates).
  virtual void showChain(TracebackChain chain) noexcept = 0;

protected:
  ~AsyncTraceback() = default;
};

/// Nim's async traceback on a std exception type, Base: what() shows it after the message.
template <class Base>
class Traced : public Base, public AsyncTraceback {
public:
  /// Base's own constructors: the message as the standard type takes it.
  template <class... Args>
  requires(!(sizeof...(Args) == 1 && (std::is_base_of_v<Traced, std::remove_cvref_t<Args>> &&
                                      ...))) explicit Traced(Args&&... args)
      : Base(std::forward<Args>(args)...), text_(Base::what()), messageSize_(text_.size()) {}

  /// The message, then the traceback (Nim's msg with its async traceback).
  const char* what() const noexcept override {
    refresh();
    return text_.c_str();
  }
  /// AsyncTraceback's traceback.
  const std::string& traceback() const noexcept override {
    refresh();
    return trace_;
  }
  /// AsyncTraceback's chain.
  const TracebackChain& chain() const noexcept override { return chain_; }
  /// AsyncTraceback's showChain. The text is rebuilt when it is next asked for, so an error
  /// passed on through a long pipeline of coroutines costs each of them one pointer.
  void showChain(TracebackChain chain) noexcept override {
    if (chain == chain_) return;
    chain_ = std::move(chain);
    stale_ = true;
  }

protected:
  /// For a derived type whose message is not the base's (OSError's `"<where>: <strerror>"`).
  void setMessage(std::string message) {
    text_ = std::move(message);
    messageSize_ = text_.size();
    trace_.clear();
    chain_.reset();
    stale_ = false;
  }

private:
  // Rebuilds the text from the message and the chain shown; out of memory, the text stays as it
  // was (what() is noexcept).
  void refresh() const noexcept {
    if (!stale_) return;
    try {
      std::string trace = detail::formatTraceback(chain_.get());
      std::string text = text_.substr(0, messageSize_);
      if (!trace.empty()) {
        text += "\nAsync traceback (innermost first):\n";
        text.append(trace, 0, trace.size() - 1); // what() ends without a newline
      }
      text_ = std::move(text);
      trace_ = std::move(trace);
      stale_ = false;
    } catch (...) {
    }
  }

  mutable std::string text_;  // the message, then the traceback
  mutable std::string trace_; // the traceback alone
  TracebackChain chain_;
  std::size_t messageSize_;    // the message's length in text_
  mutable bool stale_ = false; // chain_ changed since the text was built
};

/// Nim's OSError: an operating-system call failed. code() is the errno (Windows: the error code);
/// what() names the operation and the descriptor, e.g. "recv(fd 7): Connection reset by peer".
class OSError : public Traced<std::system_error> {
public:
  /// what() is `"<where>: <strerror(code)>"`.
  OSError(int code, const std::string& where)
      : Traced(std::error_code(code, std::system_category()), where) {
    setMessage(where + ": " + std::system_category().message(code));
  }
  /// what() is `"<where>: <message>"`, for errors whose text says more than strerror would.
  OSError(int code, const std::string& where, const std::string& message)
      : Traced(std::error_code(code, std::system_category()), where) {
    setMessage(where + ": " + message);
  }
};

/// Nim's ValueError: a call was given something it cannot work with (misuse).
class ValueError : public Traced<std::invalid_argument> {
public:
  using Traced::Traced; ///< Traced's: the message.
};

/// Nim's FutureError: a future was completed or failed more than once.
class FutureError : public Traced<std::logic_error> {
public:
  using Traced::Traced; ///< Traced's: the message.
};

/// Nim's IOError: an I/O operation could not go on, such as an address that does not resolve.
class IOError : public Traced<std::runtime_error> {
public:
  using Traced::Traced; ///< Traced's: the message.
};

/// Beyond Nim (as in chronos): what a cancelled operation fails with.
class CancelledError : public IOError {
public:
  using IOError::IOError; ///< IOError's: the message.
};

} // namespace asyncdispatch
