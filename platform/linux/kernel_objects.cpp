// The Linux kernel objects of the epoll selector's keys (see kernel_objects.hpp).
#include "kernel_objects.hpp"

#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <signal.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "../posix/signals.hpp"

namespace asyncdispatch {

UniqueFd openTimerFd(int timeout, bool oneshot) {
  if (timeout <= 0)
    throw ValueError("registerTimer: timeout must be positive, got " + std::to_string(timeout));
  UniqueFd fd(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (fd.get() < 0) throw OSError(errno, "registerTimer: timerfd_create");
  itimerspec spec{};
  spec.it_value.tv_sec = timeout / 1000;
  spec.it_value.tv_nsec = static_cast<long>(timeout % 1000) * 1000000L;
  if (!oneshot) spec.it_interval = spec.it_value;
  if (timerfd_settime(fd.get(), 0, &spec, nullptr) != 0)
    throw OSError(errno, where("registerTimer", fd.get()) + ": timerfd_settime");
  return fd;
}

UniqueFd openSignalFd(int signal, const std::string& at) {
  watchSignal(signal, at);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, signal);
  UniqueFd fd(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (fd.get() >= 0) return fd;
  const int error = errno;
  unwatchSignal(signal);
  throw OSError(error, at + ": signalfd");
}

UniqueFd openPidFd(int pid, const std::string& at) {
  // Read once per process: the tests set it before the first addProcess.
  static const bool disabled = [] {
    const char* value = std::getenv("ASYNCDISPATCH_NO_PIDFD");
    return value != nullptr && *value != '\0' && std::string_view(value) != "0";
  }();
  if (disabled) return UniqueFd();
#if defined(SYS_pidfd_open)
  UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (fd.get() >= 0 || errno == ENOSYS || errno == EPERM) return fd;
  throw OSError(errno, at + ": pidfd_open");
#else
  (void)pid, (void)at;
  return UniqueFd(); // headers older than Linux 5.3
#endif
}

UniqueFd openEventFd(const std::string& at) {
  UniqueFd fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (fd.get() < 0) throw OSError(errno, at + ": eventfd");
  return fd;
}

bool readCounter(int fd) {
  std::uint64_t value = 0;
  for (;;) {
    if (::read(fd, &value, sizeof value) == sizeof value) return true;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return false;
    throw OSError(errno, where("selectInto", fd));
  }
}

void writeCounter(int fd, const char* op) {
  const std::uint64_t one = 1;
  for (;;) {
    if (::write(fd, &one, sizeof one) == sizeof one) return;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return; // the counter is at its maximum: triggered already
    throw OSError(errno, where(op, fd));
  }
}

bool drainSignals(int fd) {
  std::array<signalfd_siginfo, 16> infos;
  bool any = false;
  for (;;) {
    const ssize_t n = ::read(fd, infos.data(), sizeof infos);
    if (n > 0) {
      any = true;
      if (static_cast<std::size_t>(n) < sizeof infos) return true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) throw OSError(errno, where("selectInto", fd));
    return any;
  }
}

} // namespace asyncdispatch
