# Micro-benchmarks of the core (co_await, coroutine calls, callSoon, resumes through futures)
# beside asio's and Nim's equivalents. The peers' headers and compiler have their install rule in
# servers.mk (tools/install.sh bench).

build/bench/micro_asyncdispatch: tools/bench/micro/asyncdispatch.cpp tools/bench/counting_new.cpp $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -MF $@.d $< tools/bench/counting_new.cpp $(LIB) -o $@

build/bench/micro_asio: tools/bench/micro/asio.cpp tools/bench/counting_new.cpp | /usr/include/asio.hpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -MF $@.d -pthread $< tools/bench/counting_new.cpp -o $@

build/bench/micro_nim: tools/bench/micro/nim.nim | /usr/bin/nim
	@mkdir -p $(dir $@)
	nim c -d:release -d:danger --hints:off --nimcache:build/bench/nimcache-micro -o:$@ $<

# The same micro-benchmarks with the library and the program built by clang++ (build/clang);
# the library is a phony step so that its own make decides whether it is up to date.
.PHONY: bench-clang-lib
bench-clang-lib:
	$(MAKE) BUILD=build/clang CXX=clang++ build/clang/lib/libasyncdispatch.a
build/bench/micro_asyncdispatch_clang: tools/bench/micro/asyncdispatch.cpp tools/bench/counting_new.cpp \
                                       bench-clang-lib
	clang++ $(filter-out -MMD -MP,$(CXXFLAGS)) tools/bench/micro/asyncdispatch.cpp \
	  tools/bench/counting_new.cpp build/clang/lib/libasyncdispatch.a -o $@

BENCH_BINS += build/bench/micro_asyncdispatch build/bench/micro_asyncdispatch_clang \
              build/bench/micro_asio build/bench/micro_nim
