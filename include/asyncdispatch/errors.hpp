// The error types of Nim's asyncdispatch, each deriving from the standard type closest to it so
// that C++ code can catch either the Nim name or the standard one.
#pragma once

#include <stdexcept>
#include <string>
#include <system_error>

namespace asyncdispatch {

// Nim's OSError: an operating-system call failed. code() is the errno (Windows: the error code);
// what() names the operation and the descriptor, e.g. "recv(fd 7): Connection reset by peer".
class OSError : public std::system_error {
public:
  // what() is "<where>: <strerror(code)>".
  OSError(int code, const std::string& where)
      : std::system_error(code, std::system_category(), where),
        message_(where + ": " + std::system_category().message(code)) {}
  // what() is "<where>: <message>", for errors whose text says more than strerror would.
  OSError(int code, const std::string& where, const std::string& message)
      : std::system_error(code, std::system_category(), where), message_(where + ": " + message) {}

  const char* what() const noexcept override { return message_.c_str(); }

private:
  std::string message_;
};

// Nim's ValueError: a call was given something it cannot work with (misuse).
class ValueError : public std::invalid_argument {
public:
  using std::invalid_argument::invalid_argument;
};

// Nim's FutureError: a future was completed or failed more than once.
class FutureError : public std::logic_error {
public:
  using std::logic_error::logic_error;
};

// Nim's IOError: an I/O operation could not go on, e.g. an address that does not resolve.
class IOError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

// Beyond Nim (as in chronos): what a cancelled operation fails with.
class CancelledError : public IOError {
public:
  using IOError::IOError;
};

} // namespace asyncdispatch
