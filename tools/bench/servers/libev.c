// libev echo: libev only reports readiness, so the sockets, reads and writes are ours. A
// connection's watcher waits for EV_READ; when a write comes up short it waits for EV_WRITE until
// the rest is out, so a slow reader stops us reading rather than making us buffer.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

enum { BUF_SIZE = 64 * 1024 };

struct conn {
  ev_io io; // first, so the watcher pointer is the connection pointer
  size_t off, len;
  char buf[BUF_SIZE];
};

static void on_readable(struct ev_loop* loop, ev_io* w, int revents);

static void drop(struct ev_loop* loop, struct conn* c) {
  ev_io_stop(loop, &c->io);
  close(c->io.fd);
  free(c);
}

// Writes what is pending; returns -1 on error, else whether everything went out.
static int flush(struct conn* c) {
  while (c->off < c->len) {
    ssize_t n = write(c->io.fd, c->buf + c->off, c->len - c->off);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    c->off += (size_t)n;
  }
  return 1;
}

// A watcher is changed while stopped: libev's rule.
static void rewatch(struct ev_loop* loop, struct conn* c, void (*cb)(struct ev_loop*, ev_io*, int),
                    int events) {
  ev_io_stop(loop, &c->io);
  ev_io_set(&c->io, c->io.fd, events);
  ev_set_cb(&c->io, cb);
  ev_io_start(loop, &c->io);
}

static void on_writable(struct ev_loop* loop, ev_io* w, int revents) {
  (void)revents;
  struct conn* c = (struct conn*)w;
  int done = flush(c);
  if (done < 0)
    drop(loop, c);
  else if (done)
    rewatch(loop, c, on_readable, EV_READ);
}

static void on_readable(struct ev_loop* loop, ev_io* w, int revents) {
  (void)revents;
  struct conn* c = (struct conn*)w;
  ssize_t n = read(w->fd, c->buf, BUF_SIZE);
  if (n < 0 && errno == EAGAIN) return;
  if (n <= 0) {
    drop(loop, c);
    return;
  }
  c->off = 0;
  c->len = (size_t)n;
  int done = flush(c);
  if (done < 0)
    drop(loop, c);
  else if (!done)
    rewatch(loop, c, on_writable, EV_WRITE); // stop reading until the rest is out
}

static void on_accept(struct ev_loop* loop, ev_io* w, int revents) {
  (void)revents;
  int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK);
  if (fd < 0) return;
  int one = 1; /* every server in the bench answers without Nagle's delay */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct conn* c = malloc(sizeof *c);
  if (!c) {
    close(fd);
    return;
  }
  ev_io_init(&c->io, on_readable, fd, EV_READ);
  ev_io_start(loop, &c->io);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: server_libev PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); // a peer that vanishes makes write fail with EPIPE instead
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr*)&addr, sizeof addr) != 0 || listen(fd, SOMAXCONN) != 0) {
    perror("server_libev");
    return 1;
  }
  struct ev_loop* loop = EV_DEFAULT;
  ev_io server;
  ev_io_init(&server, on_accept, fd, EV_READ);
  ev_io_start(loop, &server);
  fprintf(stderr, "server_libev: listening on 127.0.0.1:%s\n", argv[1]);
  ev_run(loop, 0);
}
