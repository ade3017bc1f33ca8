// The floor: the least an echo server can do, a level-triggered epoll loop with no abstraction.
// In steady state one round trip costs epoll_wait + read + write, and one epoll_wait serves every
// connection that is ready. A connection waits for EPOLLOUT only while a write is incomplete.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { BUF_SIZE = 64 * 1024, MAX_EVENTS = 256 };

struct conn {
  int fd;
  size_t off, len; // bytes buf[off, len) are read but not yet written back
  char buf[BUF_SIZE];
};

static int ep;

static void watch(struct conn* c, int op, unsigned events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  if (epoll_ctl(ep, op, c->fd, &ev) != 0) perror("epoll_ctl");
}

static void drop(struct conn* c) {
  close(c->fd); // closing also removes it from the epoll set
  free(c);
}

// Writes what is pending; returns -1 on error, else whether everything went out.
static int flush(struct conn* c) {
  while (c->off < c->len) {
    ssize_t n = write(c->fd, c->buf + c->off, c->len - c->off);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    c->off += (size_t)n;
  }
  return 1;
}

static void on_readable(struct conn* c) {
  ssize_t n = read(c->fd, c->buf, BUF_SIZE);
  if (n <= 0) {
    if (n == 0 || errno != EAGAIN) drop(c);
    return;
  }
  c->off = 0;
  c->len = (size_t)n;
  int done = flush(c);
  if (done < 0)
    drop(c);
  else if (!done)
    watch(c, EPOLL_CTL_MOD, EPOLLOUT); // stop reading until the rest is written
}

static void on_writable(struct conn* c) {
  int done = flush(c);
  if (done < 0)
    drop(c);
  else if (done)
    watch(c, EPOLL_CTL_MOD, EPOLLIN);
}

static void on_accept(int listener) {
  int fd;
  while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
    int one = 1; /* every server in the bench answers without Nagle's delay */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn* c = malloc(sizeof *c);
    if (!c) {
      close(fd);
      continue;
    }
    c->fd = fd;
    c->off = c->len = 0;
    watch(c, EPOLL_CTL_ADD, EPOLLIN);
  }
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: server_floor PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); // a peer that vanishes makes write fail with EPIPE instead
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listener, (struct sockaddr*)&addr, sizeof addr) != 0 || listen(listener, SOMAXCONN)) {
    perror("server_floor");
    return 1;
  }
  ep = epoll_create1(0);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL}; // NULL marks the listener
  epoll_ctl(ep, EPOLL_CTL_ADD, listener, &lev);
  fprintf(stderr, "server_floor: listening on 127.0.0.1:%s\n", argv[1]);

  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    int n = epoll_wait(ep, events, MAX_EVENTS, -1);
    for (int i = 0; i < n; i++) {
      struct conn* c = events[i].data.ptr;
      if (!c)
        on_accept(listener);
      else if (c->off < c->len)
        on_writable(c); // EPOLLOUT, or EPOLLERR/EPOLLHUP while writing
      else
        on_readable(c);
    }
  }
}
