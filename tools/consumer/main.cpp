// A program built against the installed library, as any consumer builds it: make install-check
// compiles it once with `pkg-config --cflags --libs asyncdispatch` and once with CMake's
// find_package(asyncdispatch), and runs both. It runs a real loop: a callSoon, a timer and a TCP
// echo round trip on 127.0.0.1; it prints "consumer: ok" and exits 0, or says what went wrong.
#include <cstdio>
#include <exception>
#include <string>

#include <asyncdispatch.hpp>

using namespace asyncdispatch;

namespace {

// The server's side: one connection, whose one message goes back as it came.
Future<void> echoOnce(AsyncFD listener) {
  AsyncFD client = co_await accept(listener);
  std::string data = co_await recv(client, 64);
  co_await send(client, data);
  closeSocket(client);
}

// The client's side, after a timer: the timer must fire before the connection is made.
Future<std::string> pingAfter(int ms, Port port) {
  co_await sleepAsync(ms);
  AsyncFD fd = co_await dial("127.0.0.1", port);
  co_await send(fd, "ping");
  std::string answer = co_await recv(fd, 64);
  closeSocket(fd);
  co_return answer;
}

} // namespace

int main() {
  try {
    bool calledSoon = false;
    callSoon([&calledSoon] { calledSoon = true; });

    AsyncFD listener = createAsyncNativeSocket();
    bindAddr(listener, Port(0), "127.0.0.1"); // port 0: the kernel picks a free one
    listen(listener);
    asyncCheck(echoOnce(listener));
    const std::string answer = waitFor(pingAfter(10, getLocalAddr(listener).second));
    closeSocket(listener);
    drain(); // lets echoOnce finish

    if (!calledSoon || answer != "ping") {
      std::fprintf(stderr, "consumer: callSoon %s, echo answered \"%s\"\n",
                   calledSoon ? "ran" : "never ran", answer.c_str());
      return 1;
    }
    std::printf("consumer: ok\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}
