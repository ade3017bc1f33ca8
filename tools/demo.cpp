// `make run`: one process, one dispatcher. An echo server and three client coroutines talk over
// 127.0.0.1; the run prints what happens, and halfway through a view of the live dispatcher
// (dumpDispatcher), so you can see the structure of Nim's drawing filled in.
#include <iostream>
#include <string>
#include <vector>

#include <asyncdispatch.hpp>

using namespace asyncdispatch;

namespace {

// Reads exactly n bytes: TCP is a stream, so one recv may return less than one message.
Future<std::string> recvExactly(AsyncFD fd, int n) {
  std::string data;
  while (static_cast<int>(data.size()) < n) {
    std::string part = co_await recv(fd, n - static_cast<int>(data.size()));
    if (part.empty()) throw IOError("recvExactly: the peer closed mid-message");
    data += part;
  }
  co_return data;
}

// One coroutine per connection: echo until the client closes.
Future<void> echo(AsyncFD client, std::string peer) {
  for (;;) {
    std::string data = co_await recv(client, 4096);
    if (data.empty()) break;
    std::cout << "  server: " << data.size() << " bytes from " << peer << " (fd " << client
              << "), echoing\n";
    co_await send(client, std::move(data));
  }
  std::cout << "  server: fd " << client << " closed by the peer\n";
  closeSocket(client);
}

Future<void> serve(AsyncFD listener, int connections) {
  for (int i = 0; i < connections; ++i) {
    auto [address, client] = co_await acceptAddr(listener);
    std::cout << "  server: accepted fd " << client << " from " << address << "\n";
    asyncCheck(echo(client, address));
  }
  closeSocket(listener);
}

Future<int> client(int id, Port port, int messages) {
  AsyncFD fd = co_await dial("127.0.0.1", port);
  std::cout << "client " << id << ": connected on fd " << fd << "\n";
  int echoed = 0;
  for (int i = 1; i <= messages; ++i) {
    const std::string message =
        "message " + std::to_string(i) + " from client " + std::to_string(id);
    co_await send(fd, message);
    const std::string reply = co_await recvExactly(fd, static_cast<int>(message.size()));
    std::cout << "client " << id << ": got back \"" << reply << "\"\n";
    echoed += reply == message ? 1 : 0;
    co_await sleepAsync(10 * id); // the clients interleave on the timers heap
  }
  closeSocket(fd);
  co_return echoed;
}

// Halfway through, print the live dispatcher: clients waiting in recv and on timers.
Future<void> showDispatcher() {
  co_await sleepAsync(25);
  std::cout << "\n--- dumpDispatcher() mid-run ---\n";
  dumpDispatcher(std::cout);
  std::cout << "--------------------------------\n\n";
}

} // namespace

int main() {
  constexpr int kClients = 3;
  constexpr int kMessages = 3;

  AsyncFD listener = createAsyncNativeSocket();
  bindAddr(listener, Port(0), "127.0.0.1");
  listen(listener);
  const Port port = getLocalAddr(listener).second;
  std::cout << "server: listening on 127.0.0.1:" << static_cast<int>(port) << " (fd " << listener
            << ")\n";
  asyncCheck(serve(listener, kClients));
  asyncCheck(showDispatcher());

  std::vector<Future<int>> clients;
  for (int id = 1; id <= kClients; ++id)
    clients.push_back(client(id, port, kMessages));
  const std::vector<int> echoed = waitFor(all(clients));
  drain(1000); // let the server side notice the closes

  int total = 0;
  for (int n : echoed)
    total += n;
  std::cout << "\n"
            << total << " of " << kClients * kMessages << " messages echoed intact; "
            << (hasPendingOperations() ? "work still pending" : "nothing left pending") << "\n";
  return total == kClients * kMessages && !hasPendingOperations() ? 0 : 1;
}
