// What every selector backend does with a descriptor: own it (UniqueFd, closed on every path that
// does not hand it over), open and drain a non-blocking close-on-exec pipe, name it in an error.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>

#include "../../include/asyncdispatch/errors.hpp"

namespace asyncdispatch {

class UniqueFd {
public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }

  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

private:
  int fd_ = -1;
};

// "updateHandle(fd 7)": errors name the call and the descriptor.
inline std::string where(const char* op, int fd) {
  return std::string(op) + "(fd " + std::to_string(fd) + ")";
}

// "registerSignal(signal 10)", "registerProcess(pid 4242)": errors name the value they refuse.
inline std::string where(const char* op, const char* what, int value) {
  return std::string(op) + "(" + what + " " + std::to_string(value) + ")";
}

// A pipe whose ends are non-blocking and close-on-exec, set one by one: pipe2 is not in every
// POSIX system's libc (macOS has none).
inline void openPipe(UniqueFd& readEnd, UniqueFd& writeEnd, const std::string& at) {
  int ends[2];
  if (::pipe(ends) != 0) throw OSError(errno, at + ": pipe");
  UniqueFd r(ends[0]);
  UniqueFd w(ends[1]);
  for (const int fd : ends) {
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
      throw OSError(errno, at + ": fcntl");
  }
  readEnd = std::move(r);
  writeEnd = std::move(w);
}

// A descriptor that names a key with no descriptor of its own (a timer, signal or process on a
// kernel without such objects): while it is open, no socket can take its number. As Nim's
// kqueue selector does, /dev/null, close-on-exec.
inline UniqueFd reserveDescriptor(const std::string& at) {
  UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw OSError(errno, at + ": open /dev/null");
  return fd;
}

// Empties a non-blocking pipe. False when it was empty already (for a user event: another
// dispatcher watching it read it first).
inline bool drainPipe(int fd) noexcept {
  char bytes[64];
  bool any = false;
  for (;;) {
    const ssize_t n = ::read(fd, bytes, sizeof bytes);
    if (n > 0) {
      any = true;
    } else if (n == 0 || errno != EINTR) {
      return any; // EAGAIN: empty
    }
  }
}

} // namespace asyncdispatch
