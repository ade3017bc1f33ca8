// Standalone asio echo with C++20 coroutines, as in asio's own examples: one coroutine per
// connection, spawned with co_spawn, every operation awaited through use_awaitable.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <utility>

#include <asio.hpp>

using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;

namespace {

awaitable<void> echo(tcp::socket socket) {
  char data[64 * 1024]; // lives in the coroutine frame, one per connection
  try {
    for (;;) {
      std::size_t n = co_await socket.async_read_some(asio::buffer(data), use_awaitable);
      co_await asio::async_write(socket, asio::buffer(data, n), use_awaitable);
    }
  } catch (const std::exception&) {
    // asio reports end of stream as an error; the socket closes when the coroutine ends.
  }
}

awaitable<void> serve(tcp::acceptor& acceptor) {
  for (;;) {
    tcp::socket socket = co_await acceptor.async_accept(use_awaitable);
    socket.set_option(tcp::no_delay(true)); // every server in the bench answers without Nagle
    asio::co_spawn(acceptor.get_executor(), echo(std::move(socket)), asio::detached);
  }
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: server_asio PORT\n");
    return 2;
  }
  try {
    asio::io_context io(1); // the hint says one thread runs it, so asio can skip some locking
    // The acceptor opens, sets SO_REUSEADDR, binds and listens with SOMAXCONN.
    tcp::acceptor acceptor(
        io, {asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(std::atoi(argv[1]))});
    asio::co_spawn(io, serve(acceptor), asio::detached);
    std::fprintf(stderr, "server_asio: listening on 127.0.0.1:%s\n", argv[1]);
    io.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "server_asio: %s\n", e.what());
    return 1;
  }
}
