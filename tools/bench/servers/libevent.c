// libevent 2 echo with bufferevents: libevent reads into each connection's input buffer, and the
// read callback moves those bytes to the output buffer, which libevent writes out as it can.
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

static void on_read(struct bufferevent* bev, void* arg) {
  (void)arg;
  evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
}

static void on_event(struct bufferevent* bev, short events, void* arg) {
  (void)arg;
  if (events & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) bufferevent_free(bev); // closes the socket too
}

static void on_accept(struct evconnlistener* listener, evutil_socket_t fd, struct sockaddr* addr,
                      int len, void* arg) {
  (void)addr;
  (void)len;
  (void)arg;
  int one = 1; /* every server in the bench answers without Nagle's delay */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct event_base* base = evconnlistener_get_base(listener);
  struct bufferevent* bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (!bev) {
    evutil_closesocket(fd);
    return;
  }
  bufferevent_setcb(bev, on_read, NULL, on_event, NULL);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: server_libevent PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); // a peer that vanishes makes the write fail with EPIPE instead
  struct event_base* base = event_base_new();
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // The listener sets the socket non-blocking and SO_REUSEADDR, binds and listens.
  struct evconnlistener* listener =
      evconnlistener_new_bind(base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                              SOMAXCONN, (struct sockaddr*)&addr, sizeof addr);
  if (!listener) {
    perror("server_libevent");
    return 1;
  }
  fprintf(stderr, "server_libevent: listening on 127.0.0.1:%s\n", argv[1]);
  event_base_dispatch(base);
}
