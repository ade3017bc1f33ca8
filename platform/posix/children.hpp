// The SIGCHLD fallback's bookkeeping: which children a selector waits for, and which of them have
// exited, for a kernel with no process filter (poll, event ports) or without pidfd_open (epoll
// before Linux 5.3, or under a seccomp profile that refuses it). How SIGCHLD is noticed is the
// caller's: a signalfd (epoll) or a SignalPipe (platform/posix/signals.hpp).
//
// Invariants:
//  1. Nothing here reaps: every check is waitid(WEXITED | WNOHANG | WNOWAIT), so the exit status
//     stays for the program's own waitpid (Nim's callback reaps, and so may ours).
//  2. SIGCHLD coalesces: one notice may stand for any number of exits, so each notice checks
//     every child still waited for (collectExited), not one.
//  3. The caller notices SIGCHLD (blocked or caught) before add checks the child: an exit before
//     the check is found by it, one after it is a pending SIGCHLD, never lost between the two.
//  4. A child is waited for from add until collectExited finds it exited or remove drops its
//     key; each wait names the key (a descriptor of the selector's table) that reports it.
#pragma once

#include <string>
#include <vector>

#include "../../include/asyncdispatch/types.hpp"

namespace asyncdispatch {

// Throws OSError(ECHILD, "<at>: not a child of this process") unless pid is a child of this
// process: only a child's exit can be seen by SIGCHLD and read by the callback's waitpid.
void requireChild(int pid, const std::string& at);

class ChildWaits {
public:
  // Waits for pid under key, unless it has exited already (then false: report it at once).
  bool add(SocketHandle key, int pid);
  void remove(SocketHandle key) noexcept;
  // After a SIGCHLD (see 2): drops every child that has exited and calls onExited(key) for each.
  template <class F>
  void collectExited(F&& onExited) {
    std::erase_if(waiting, [&](const Wait& wait) {
      if (!exited(wait.pid)) return false;
      onExited(wait.key);
      return true;
    });
  }
  bool empty() const noexcept { return waiting.empty(); }

private:
  static bool exited(int pid);

  struct Wait {
    SocketHandle key;
    int pid;
  };
  std::vector<Wait> waiting;
};

} // namespace asyncdispatch
