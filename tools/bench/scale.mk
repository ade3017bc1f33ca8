# Timers at scale (a million sleepAsync against libuv, asio and Nim) and memory per idle
# connection. The peers' headers are order-only: servers.mk installs them when missing.

SCALE_CFLAGS := -O2 -g -Wall -Wextra -Wpedantic

build/bench/timers_asyncdispatch: tools/bench/timers/asyncdispatch.cpp $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -MF $@.d $< $(LIB) -o $@

build/bench/idle_asyncdispatch: tools/bench/idle/asyncdispatch.cpp $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -MF $@.d $< $(LIB) -o $@

build/bench/timers_libuv: tools/bench/timers/libuv.c | /usr/include/uv.h
	@mkdir -p $(dir $@)
	$(CC) $(SCALE_CFLAGS) $< -o $@ -luv

build/bench/timers_asio: tools/bench/timers/asio.cpp | /usr/include/asio.hpp
	@mkdir -p $(dir $@)
	$(CXX) -std=c++20 $(SCALE_CFLAGS) -pthread $< -o $@

build/bench/timers_nim: tools/bench/timers/nim.nim | /usr/bin/nim
	@mkdir -p $(dir $@)
	nim c -d:release -d:danger --hints:off --nimcache:build/bench/nimcache-timers -o:$@ $<

BENCH_BINS += build/bench/timers_asyncdispatch build/bench/timers_libuv build/bench/timers_asio \
              build/bench/timers_nim build/bench/idle_asyncdispatch
