# The HTTP/1.1 example: its program, its check against curl (tools/examples/http_check.sh) and the
# fuzzing of its request parser (tools/fuzz/http_fuzz.cpp, corpus in tools/fuzz/corpus_http/).

TOOLS += $(BUILD)/bin/http_server
EXAMPLES_CHECKS += examples-check-http
FUZZ_MORE += fuzz-http

.PHONY: examples-check-http fuzz-http

examples-check-http: $(BUILD)/bin/http_server
	@command -v curl >/dev/null || sh tools/install.sh check
	bash tools/examples/http_check.sh $(BUILD)/bin

# Built as the dispatcher harness is (clang, libFuzzer, ASan+UBSan; see the fuzz rule in the
# Makefile) but without the library: the parser is header-only. It runs from a copy of the corpus.
fuzz-http:
	@echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, long) { return 0; }' | \
	  clang++ -x c++ -fsanitize=fuzzer - -o /dev/null 2>/dev/null || sh tools/install.sh check
	@mkdir -p build/fuzz
	clang++ -std=c++20 -O1 -g -Wall -Wextra -Wpedantic -Werror $(FUZZ_SAN) -fsanitize=fuzzer \
	  tools/fuzz/http_fuzz.cpp -o build/fuzz/http_fuzz
	rm -rf build/fuzz/corpus_http && mkdir -p build/fuzz/corpus_http && \
	  cp tools/fuzz/corpus_http/* build/fuzz/corpus_http/
	timeout $$(( $(FUZZ_SECONDS) + 300 )) build/fuzz/http_fuzz -max_total_time=$(FUZZ_SECONDS) \
	  -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -max_len=20000 -dict=tools/fuzz/http.dict \
	  -artifact_prefix=build/fuzz/http- build/fuzz/corpus_http > build/fuzz/http.log 2>&1; \
	  status=$$?; tail -n 15 build/fuzz/http.log; exit $$status
