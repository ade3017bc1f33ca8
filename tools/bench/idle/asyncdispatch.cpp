// Memory per idle connection: the server accepts 10,000 connections (2,000 with `--quick`) with
// this library, then starts recv(client, 4096) on each. The growth of the process's RSS at each
// step, divided by the number of connections, is what one idle connection costs. The clients
// live in a child process so that their sockets do not count.
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <asyncdispatch.hpp>

#include "../harness.hpp"

using namespace asyncdispatch;

namespace {

// The resident set of this process in bytes, from /proc/self/status.
long rssBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6) * 1024;
  return -1;
}

// Raises the descriptor limit to the hard limit; returns how many connections fit under it (each
// process holds one end of every connection, plus a few descriptors of its own).
int fitConnections(int wanted) {
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);
  const rlim_t room = lim.rlim_cur - 32;
  if (lim.rlim_cur != RLIM_INFINITY && room < static_cast<rlim_t>(wanted)) {
    std::fprintf(stderr, "idle: the descriptor limit is %llu: using %d connections, not %d\n",
                 static_cast<unsigned long long>(lim.rlim_cur), static_cast<int>(room), wanted);
    return static_cast<int>(room);
  }
  return wanted;
}

// The child: reads the port, connects n blocking sockets to it, then waits for the parent to
// close the pipe and exits (the kernel closes the sockets).
[[noreturn]] void runClients(int fromParent, int n) {
  std::uint16_t port = 0;
  if (read(fromParent, &port, sizeof port) != sizeof port) _exit(1);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < n; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      std::perror("idle: client connect");
      _exit(1);
    }
  }
  char byte;
  while (read(fromParent, &byte, 1) > 0) {
  }
  _exit(0);
}

Future<void> acceptAll(AsyncFD listener, std::vector<AsyncFD>& clients) {
  for (AsyncFD& client : clients)
    client = co_await accept(listener);
}

void report(const char* name, double value) {
  bench::report("idle", "asyncdispatch", name, value, "bytes");
}

} // namespace

int main(int argc, char** argv) {
  const bool quick = bench::quickFlag(argc, argv);
  const int n = fitConnections(quick ? 2'000 : 10'000);

  // Fork before the dispatcher exists, so that the child shares nothing of the library.
  int toChild[2];
  if (pipe(toChild) != 0) return 1;
  const pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) {
    close(toChild[1]);
    runClients(toChild[0], n);
  }
  close(toChild[0]);

  AsyncFD listener = createAsyncNativeSocket();
  bindAddr(listener, Port(0), "127.0.0.1");
  listen(listener);
  const std::uint16_t port = static_cast<std::uint16_t>(getLocalAddr(listener).second);
  if (write(toChild[1], &port, sizeof port) != sizeof port) return 1;

  // Filled now, so that the pages of these two vectors are not counted as the library's.
  std::vector<AsyncFD> clients(static_cast<std::size_t>(n));
  std::vector<Future<std::string>> reads(static_cast<std::size_t>(n));

  const long before = rssBytes();
  Future<void> accepted = acceptAll(listener, clients);
  while (!accepted.finished()) {
    poll(100);
    if (waitpid(child, nullptr, WNOHANG) == child) {
      std::fprintf(stderr, "idle: the client process exited early\n");
      return 1;
    }
  }
  accepted.read();
  const long registered = rssBytes();

  for (int i = 0; i < n; ++i)
    reads[i] = recv(clients[i], 4096);
  poll(0); // one pass, in case the backend arms the descriptors lazily
  const long waiting = rssBytes();

  std::fprintf(stderr,
               "idle: %d connections, %d armed; RSS %ld -> %ld (accepted) -> %ld (recv pending)\n",
               n, activeDescriptors(), before, registered, waiting);
  report("bytes per registered idle socket", static_cast<double>(registered - before) / n);
  report("bytes per idle connection waiting in recv(4096)",
         static_cast<double>(waiting - registered) / n);

  // closeSocket fails each pending recv; poll until every failure has been delivered.
  for (AsyncFD client : clients)
    closeSocket(client);
  drain();
  int unfinished = 0;
  for (const Future<std::string>& r : reads)
    unfinished += r.finished() && r.failed() ? 0 : 1;
  closeSocket(listener);
  close(toChild[1]); // tells the child to exit
  int status = 0;
  waitpid(child, &status, 0);
  if (unfinished != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "idle: %d recvs did not fail on close; client status %d\n", unfinished,
                 status);
    return 1;
  }
  return 0;
}
