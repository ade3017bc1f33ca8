// A supervisor: runs a command as a child process and starts it again each time it exits; on
// SIGTERM or SIGINT it stops the child (SIGTERM, then SIGKILL if it lingers) and exits 0. Nim's
// addProcess, addSignal and addTimer at work on one dispatcher.
//
//   build/bin/supervisor COMMAND [ARGS...]
#include <sys/wait.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <exception>
#include <iostream>
#include <string>

#include <asyncdispatch.hpp>

using namespace asyncdispatch;

namespace {

// A command that fails at once is started again after this pause, not in a busy loop.
constexpr int kRestartDelayMs = 100;
// How long a child may take to exit after SIGTERM before it gets SIGKILL, checked every tick.
constexpr int kKillAfterMs = 2000;
constexpr int kKillTickMs = 100;

struct Supervisor {
  char** command = nullptr;
  sigset_t childMask{}; // the mask the supervisor started with, which the command gets
  pid_t child = -1;     // -1 while no child runs
  int restarts = 0;
  bool stopping = false;
  bool done = false;
};

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "was killed by signal " + std::to_string(WTERMSIG(status));
  return "ended";
}

// Forks and execs the command. The child gets the supervisor's original signal mask back: a
// blocked mask survives execve, and a command started with SIGTERM blocked never sees it.
pid_t spawn(const Supervisor& s) {
  const pid_t pid = fork();
  if (pid < 0) throw OSError(errno, "supervisor: fork");
  if (pid == 0) {
    pthread_sigmask(SIG_SETMASK, &s.childMask, nullptr);
    execvp(s.command[0], s.command);
    _exit(127); // the command could not be run: its "exit status" says so, as a shell's does
  }
  return pid;
}

void start(Supervisor& s);

// The child exited: reap it (the library never does), then start it again after a pause, unless
// the supervisor is stopping.
bool onExit(Supervisor& s, pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  s.child = -1;
  std::cout << "supervisor: pid " << pid << " " << describe(status) << std::endl;
  if (s.stopping) {
    s.done = true;
    return true;
  }
  addTimer(kRestartDelayMs, true, [&s](AsyncFD) {
    if (s.stopping) {
      s.done = true;
    } else {
      ++s.restarts;
      start(s);
    }
    return true;
  });
  return true;
}

void start(Supervisor& s) {
  const pid_t pid = spawn(s);
  s.child = pid;
  std::cout << "supervisor: started " << s.command[0] << " as pid " << pid << std::endl;
  addProcess(pid, [&s, pid](AsyncFD) { return onExit(s, pid); });
}

// SIGTERM or SIGINT: stop the child, escalating to SIGKILL if it is still there after
// kKillAfterMs; the supervisor is done once the child has been reaped.
bool onStopSignal(Supervisor& s) {
  if (s.stopping) return true;
  s.stopping = true;
  std::cout << "supervisor: stopping" << std::endl;
  if (s.child < 0) return true; // between two runs: the restart timer ends it
  const pid_t pid = s.child;
  kill(pid, SIGTERM);
  addTimer(kKillTickMs, false, [&s, pid, waited = 0](AsyncFD) mutable {
    if (s.child != pid) return true; // it exited
    waited += kKillTickMs;
    if (waited < kKillAfterMs) return false;
    kill(pid, SIGKILL);
    return true;
  });
  return true;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: supervisor COMMAND [ARGS...]\n";
    return 2;
  }
  Supervisor s;
  s.command = argv + 1;
  pthread_sigmask(SIG_BLOCK, nullptr, &s.childMask);
  try {
    addSignal(SIGTERM, [&s](AsyncFD) { return onStopSignal(s); });
    addSignal(SIGINT, [&s](AsyncFD) { return onStopSignal(s); });
    start(s);
    while (!s.done)
      poll(-1);
  } catch (const std::exception& e) {
    std::cerr << "supervisor: " << e.what() << "\n";
    if (s.child > 0) kill(s.child, SIGKILL);
    return 1;
  }
  std::cout << "supervisor: stopped after " << s.restarts << " restarts" << std::endl;
  return 0;
}
