// The SIGCHLD fallback's bookkeeping; its invariants open children.hpp.
#include "children.hpp"

#include <sys/wait.h>

#include <algorithm>
#include <cerrno>

#include "../../include/asyncdispatch/errors.hpp"

namespace asyncdispatch {

void requireChild(int pid, const std::string& at) {
  siginfo_t info{};
  if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0) return;
  if (errno == ECHILD) throw OSError(ECHILD, at, "not a child of this process");
  throw OSError(errno, at + ": waitid");
}

bool ChildWaits::add(SocketHandle key, int pid) {
  if (exited(pid)) return false;
  waiting.push_back(Wait{key, pid});
  return true;
}

void ChildWaits::remove(SocketHandle key) noexcept {
  std::erase_if(waiting, [key](const Wait& wait) { return wait.key == key; });
}

// Whether child pid has exited, without reaping it (see 1). A pid that is no longer our child
// was reaped by someone else, so it has exited too.
bool ChildWaits::exited(int pid) {
  siginfo_t info{};
  if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0)
    return errno == ECHILD;
  return info.si_pid == pid;
}

} // namespace asyncdispatch
