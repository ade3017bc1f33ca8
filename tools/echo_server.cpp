// An echo server that runs until killed: `build/bin/echo_server PORT`, then try `nc 127.0.0.1
// PORT`. Each connection is one coroutine that sends back whatever it receives.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include <asyncdispatch.hpp>

using namespace asyncdispatch;

namespace {

Future<void> echo(AsyncFD client) {
  for (;;) {
    std::string data = co_await recv(client, 16384);
    if (data.empty()) break; // the peer closed
    co_await send(client, std::move(data));
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
