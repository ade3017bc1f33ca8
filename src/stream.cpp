// Nim's readAll over a FutureStream<std::string>: await read() until the stream says it is done.
#include "../include/asyncdispatch/stream.hpp"

namespace asyncdispatch {

Future<std::string> readAll(FutureStream<std::string> stream) {
  std::string all;
  for (;;) {
    auto [hasValue, value] = co_await stream.read();
    if (!hasValue) break;
    all += value;
  }
  co_return all;
}

} // namespace asyncdispatch
