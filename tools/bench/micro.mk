# Micro-benchmarks of the core (co_await, coroutine calls, callSoon, resumes through futures)
# beside asio's and Nim's equivalents. The peers' headers and compiler have their install rule in
# servers.mk (install-peers.sh).

build/bench/micro_asyncdispatch: tools/bench/micro/asyncdispatch.cpp tools/bench/counting_new.cpp $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -MF $@.d $< tools/bench/counting_new.cpp $(LIB) -o $@

build/bench/micro_asio: tools/bench/micro/asio.cpp tools/bench/counting_new.cpp | /usr/include/asio.hpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -MF $@.d -pthread $< tools/bench/counting_new.cpp -o $@

build/bench/micro_nim: tools/bench/micro/nim.nim | /usr/bin/nim
	@mkdir -p $(dir $@)
	nim c -d:release -d:danger --hints:off --nimcache:build/bench/nimcache-micro -o:$@ $<

BENCH_BINS += build/bench/micro_asyncdispatch build/bench/micro_asio build/bench/micro_nim
