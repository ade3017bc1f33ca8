#include "support.hpp"

using namespace asyncdispatch;
using namespace testsupport;

TEST_CASE("recv: a message sent by the peer arrives") {
  auto [client, server] = connectedPair();
  waitWithin(send(client, std::string("hello")));
  CHECK(waitWithin(recv(server, 100)) == "hello");
  closeSocket(client);
  closeSocket(server);
  checkDispatcherEmpty();
}
