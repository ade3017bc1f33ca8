// An echo server that runs until killed: `build/bin/echo_server PORT`, then try `nc 127.0.0.1
// PORT`. Each connection is one coroutine that sends back whatever it receives.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstdlib>
#include <iostream>

#include <asyncdispatch.hpp>

using namespace asyncdispatch;

namespace {

// recvInto and send over the connection's own buffer, which lives in the coroutine frame: no
// allocation and no copy per message (recv would hand over a new string each time).
Future<void> echo(AsyncFD client) {
  char buffer[16384];
  for (;;) {
    const int n = co_await recvInto(client, buffer, sizeof buffer);
    if (n == 0) break; // the peer closed
    co_await send(client, buffer, n);
  }
  closeSocket(client);
}

Future<void> serve(AsyncFD server) {
  for (;;) {
    AsyncFD client = co_await accept(server);
    setSockOptInt(client, IPPROTO_TCP, TCP_NODELAY, 1); // answer without Nagle's delay
    asyncCheck(echo(client));
  }
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: echo_server PORT\n";
    return 2;
  }
  const int port = std::atoi(argv[1]);
  if (port <= 0 || port > 65535) {
    std::cerr << "echo_server: not a port: " << argv[1] << "\n";
    return 2;
  }
  AsyncFD server = createAsyncNativeSocket();
  setSockOptInt(server, SOL_SOCKET, SO_REUSEADDR, 1);
  bindAddr(server, Port(port), "127.0.0.1");
  listen(server);
  std::cerr << "echo_server: listening on 127.0.0.1:" << port << std::endl;
  asyncCheck(serve(server));
  runForever();
}
