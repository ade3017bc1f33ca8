// The 2015-era names of Nim's older documentation (<asyncdispatch/compat.hpp>): each is today's
// type or call under its old name, and works as such.
// The amalgamation (make amalgamation) has no compat.hpp of its own: its one header, which
// support.hpp includes, holds these names too.
#if __has_include(<asyncdispatch/compat.hpp>)
#include <asyncdispatch/compat.hpp>
#endif

#if !defined(_WIN32)
#include <fcntl.h>
#endif

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
#if !defined(_WIN32) // Windows cannot report whether FIONBIO is set: checked below by a recv
  CHECK((fcntl(static_cast<int>(fd), F_GETFL) & O_NONBLOCK) != 0);
#endif
  // And it talks: a connection to a local listener over it.
  const Listener listener = listenLocal();
  Future<void> connected = connect(fd, "127.0.0.1", listener.port);
  Future<AsyncFD> accepted = accept(listener.fd);
  waitWithin(connected);
  const AsyncFD server = waitWithin(accepted);
#if defined(_WIN32) // non-blocking: a recv with nothing to read says so instead of waiting
  char c;
  CHECK(::recv(static_cast<SOCKET>(fd), &c, 1, 0) == SOCKET_ERROR);
  CHECK(WSAGetLastError() == WSAEWOULDBLOCK);
#endif
  closeSocket(server);
  closeSocket(listener.fd);
  closeSocket(fd);
  checkDispatcherEmpty();
}

#if defined(_WIN32) // the IOCP dispatcher's own types exist on Windows only
TEST_CASE("compat: PCustomOverlapped and TCompletionData are CustomRef and CompletionData") {
  static_assert(std::is_same_v<PCustomOverlapped, CustomRef>);
  static_assert(std::is_same_v<TCompletionData, CompletionData>);
  PCustomOverlapped ol = newCustom();
  CHECK(ol.get() != nullptr);
  CHECK(ol->data.fd == AsyncFD(-1));
  checkDispatcherEmpty();
}
#else
[[maybe_unused]] const bool iocpTypesCaseOut =
    testsupport::compiledOut("tests/compat.cpp: \"compat: PCustomOverlapped and TCompletionData "
                             "are CustomRef and CompletionData\"",
                             "the IOCP dispatcher's own types exist on Windows only");
#endif
