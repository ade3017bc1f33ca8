// libuv echo, written the way libuv's guide does it: every read hands its buffer to a uv_write,
// and the write callback frees it.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

// A write request that owns the bytes it sends.
struct write_req {
  uv_write_t req;
  uv_buf_t buf;
};

static void on_alloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf) {
  (void)handle;
  buf->base = malloc(suggested); // libuv suggests 64 KiB
  buf->len = buf->base ? suggested : 0;
}

static void on_close(uv_handle_t* handle) {
  free(handle);
}

static void on_write(uv_write_t* req, int status) {
  struct write_req* w = (struct write_req*)req;
  if (status < 0 && !uv_is_closing((uv_handle_t*)req->handle))
    uv_close((uv_handle_t*)req->handle, on_close);
  free(w->buf.base);
  free(w);
}

static void on_read(uv_stream_t* client, ssize_t nread, const uv_buf_t* buf) {
  if (nread > 0) {
    struct write_req* w = malloc(sizeof *w);
    w->buf = uv_buf_init(buf->base, (unsigned)nread);
    uv_write(&w->req, client, &w->buf, 1, on_write);
    return;
  }
  free(buf->base); // nread == 0 is EAGAIN: nothing was read into the buffer
  if (nread < 0 && !uv_is_closing((uv_handle_t*)client)) uv_close((uv_handle_t*)client, on_close);
}

static void on_connection(uv_stream_t* server, int status) {
  if (status < 0) return;
  uv_tcp_t* client = malloc(sizeof *client);
  uv_tcp_init(server->loop, client);
  if (uv_accept(server, (uv_stream_t*)client) == 0) {
    uv_tcp_nodelay(client, 1); /* every server in the bench answers without Nagle's delay */
    uv_read_start((uv_stream_t*)client, on_alloc, on_read);
  } else
    uv_close((uv_handle_t*)client, on_close);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: server_libuv PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); // a peer that vanishes makes the write fail with EPIPE instead
  uv_loop_t* loop = uv_default_loop();
  uv_tcp_t server;
  uv_tcp_init(loop, &server); // libuv sets SO_REUSEADDR itself when binding
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
  int err = uv_tcp_bind(&server, (const struct sockaddr*)&addr, 0);
  if (!err) err = uv_listen((uv_stream_t*)&server, SOMAXCONN, on_connection);
  if (err) {
    fprintf(stderr, "server_libuv: %s\n", uv_strerror(err));
    return 1;
  }
  fprintf(stderr, "server_libuv: listening on 127.0.0.1:%s\n", argv[1]);
  return uv_run(loop, UV_RUN_DEFAULT);
}
