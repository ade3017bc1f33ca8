# The echo load generator: plain C++ and epoll, it needs neither the library nor a peer.
build/bench/loadgen: tools/bench/loadgen.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -MF $@.d $< -o $@

BENCH_BINS += build/bench/loadgen
