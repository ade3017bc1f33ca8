// The error types of Nim's asyncdispatch, each deriving from the standard type closest to it so
// that C++ code can catch either the Nim name or the standard one.
#pragma once

#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace asyncdispatch {

/// Nim's async traceback: the coroutines an error passed through on its way out, innermost first.
/// A coroutine whose body lets an exception escape adds its name (addFrame), and what() shows the
/// chain after the message. Every error type of the library carries one; an application's own
/// error type gets the same by deriving from Traced<std::runtime_error> (or any std exception).
/// Exceptions of other types pass through coroutines unchanged.
class AsyncTraceback {
public:
  /// Appends `"  <coroutine>"` under an "Async traceback" heading (Nim's layout, innermost first).
  virtual void addFrame(const char* coroutine) = 0;
  /// The chain so far, one coroutine per line; empty if the error left no coroutine yet.
  virtual const std::string& traceback() const noexcept = 0;

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
      : Base(std::forward<Args>(args)...), text_(Base::what()) {}

  /// The message, then the traceback (Nim's msg with its async traceback).
  const char* what() const noexcept override { return text_.c_str(); }
  /// AsyncTraceback's addFrame, kept in what() too.
  void addFrame(const char* coroutine) override {
    if (trace_.empty()) text_ += "\nAsync traceback (innermost first):";
    trace_ += std::string("  ") + coroutine + "\n";
    text_ += std::string("\n  ") + coroutine;
  }
  /// AsyncTraceback's traceback.
  const std::string& traceback() const noexcept override { return trace_; }

protected:
  /// For a derived type whose message is not the base's (OSError's `"<where>: <strerror>"`).
  void setMessage(std::string message) { text_ = std::move(message); }

private:
  std::string text_;  // the message, then the traceback
  std::string trace_; // the traceback alone
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
