// The Linux kernel objects a key of the epoll selector can be, opened, read and written here so
// that selector.cpp holds only the contract: timerfd (Timer), signalfd (Signal), pidfd (Process),
// eventfd (User, and a Process key on the SIGCHLD fallback). The numbers refer to the list of
// what is hard about epoll in selector.hpp.
#pragma once

#include <string>

#include "../posix/descriptors.hpp"

namespace asyncdispatch {

// A CLOCK_MONOTONIC timerfd expiring after timeout ms, then every timeout ms unless oneshot
// (see 6; a timeout <= 0 is refused: a timerfd set to 0 is disarmed).
UniqueFd openTimerFd(int timeout, bool oneshot);

// A signalfd for signal, which this thread then watches: blocked in its mask (see 7).
UniqueFd openSignalFd(int signal, const std::string& at);

// A pidfd for pid, or an empty UniqueFd when the kernel has none (ENOSYS, or EPERM from an old
// seccomp profile) or ASYNCDISPATCH_NO_PIDFD=1 asks for the SIGCHLD fallback (see 8).
UniqueFd openPidFd(int pid, const std::string& at);

UniqueFd openEventFd(const std::string& at);

// Reads an eventfd's or a timerfd's 8-byte counter, which resets it (see 6 and 9). False when
// it was already zero: another dispatcher watching the same event read it first.
bool readCounter(int fd);

// Adds one to an eventfd's counter; safe from any thread (see 9).
void writeCounter(int fd, const char* op);

// Reads every signal queued on a signalfd (standard signals coalesce, real-time ones queue; see
// 7). False when there was none.
bool drainSignals(int fd);

} // namespace asyncdispatch
