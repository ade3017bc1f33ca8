# The peer echo servers the echo benchmark runs against this library's build/bin/echo_server.
# Each peer comes from a Debian package: a missing header or compiler runs tools/install.sh bench.

SERVERS_CFLAGS := -O2 -Wall -Wextra -Wpedantic
SERVERS_PEERS  := /usr/include/uv.h /usr/include/ev.h /usr/include/event2/event.h \
                  /usr/include/asio.hpp /usr/bin/nim

$(SERVERS_PEERS):
	sh tools/install.sh bench

build/bench/server_floor: tools/bench/servers/floor.c
	@mkdir -p $(dir $@)
	$(CC) $(SERVERS_CFLAGS) $< -o $@

build/bench/server_libuv: tools/bench/servers/libuv.c | /usr/include/uv.h
	@mkdir -p $(dir $@)
	$(CC) $(SERVERS_CFLAGS) $< -o $@ -luv

build/bench/server_libev: tools/bench/servers/libev.c | /usr/include/ev.h
	@mkdir -p $(dir $@)
	$(CC) $(SERVERS_CFLAGS) $< -o $@ -lev

build/bench/server_libevent: tools/bench/servers/libevent.c | /usr/include/event2/event.h
	@mkdir -p $(dir $@)
	$(CC) $(SERVERS_CFLAGS) $< -o $@ -levent

# asio 1.22 looks for clang's coroutines only in <experimental/coroutine>, which libstdc++ 12
# lacks; telling it they are there lets CXX=clang++ build this too.
build/bench/server_asio: tools/bench/servers/asio.cpp | /usr/include/asio.hpp
	@mkdir -p $(dir $@)
	$(CXX) -std=c++20 $(SERVERS_CFLAGS) -DASIO_HAS_CO_AWAIT=1 -DASIO_HAS_STD_COROUTINE=1 -pthread \
	  $< -o $@

# nim keeps its generated C in its own cache, so a rebuild only recompiles what changed.
build/bench/server_nim: tools/bench/servers/nim.nim | /usr/bin/nim
	@mkdir -p $(dir $@)
	nim c -d:release -d:danger --hints:off --nimcache:build/bench/nimcache-server -o:$@ $<

# This library's echo server again, on the poll(2) backend (build/poll), made by a make of its own.
ifneq ($(BACKEND),poll)
build/poll/bin/echo_server: FORCE
	$(MAKE) BACKEND=poll build/poll/bin/echo_server
endif

BENCH_BINS += build/poll/bin/echo_server build/bench/server_floor build/bench/server_libuv build/bench/server_libev \
              build/bench/server_libevent build/bench/server_asio build/bench/server_nim

.PHONY: FORCE
FORCE:
