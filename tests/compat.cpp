// The 2015-era names of Nim's older documentation (<asyncdispatch/compat.hpp>): each is today's
// type or call under its old name, and works as such.
#include <asyncdispatch/compat.hpp>

#include <fcntl.h>

#include <type_traits>

#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

TEST_CASE("compat: TAsyncFD, TCallback and PDispatcher are today's types") {
  static_assert(std::is_same_v<TAsyncFD, AsyncFD>);
  static_assert(std::is_same_v<TCallback, Callback>);
  static_assert(std::is_same_v<PDispatcher, std::shared_ptr<Dispatcher>>);
  checkDispatcherEmpty();
}

TEST_CASE("compat: newAsyncRawSocket makes a registered non-blocking socket, as "
          "createAsyncNativeSocket does") {
  const TAsyncFD fd = newAsyncRawSocket();
  CHECK(contains(getGlobalDispatcher(), fd));
  CHECK((fcntl(static_cast<int>(fd), F_GETFL) & O_NONBLOCK) != 0);
  // And it talks: a connection to a local listener over it.
  const Listener listener = listenLocal();
  Future<void> connected = connect(fd, "127.0.0.1", listener.port);
  Future<AsyncFD> accepted = accept(listener.fd);
  waitWithin(connected);
  const AsyncFD server = waitWithin(accepted);
  closeSocket(server);
  closeSocket(listener.fd);
  closeSocket(fd);
  checkDispatcherEmpty();
}
