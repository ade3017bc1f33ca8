# The RESP server example: its program, its check against redis-cli (resp-check, part of
# examples-check) and the fuzzing of its request parser (fuzz-resp, part of `make fuzz`).
TOOLS           += $(BUILD)/bin/resp_server
EXAMPLES_CHECKS += resp-check
FUZZ_MORE       += fuzz-resp

.PHONY: resp-check fuzz-resp

resp-check: $(BUILD)/bin/resp_server
	@command -v redis-cli >/dev/null || sh tools/install.sh check
	bash tools/examples/resp_check.sh $(BUILD)/bin

# The parser alone (a header, no library): libFuzzer from a copy of the committed corpus, with
# the same clang sanitizers as the dispatcher's harness.
fuzz-resp:
	@mkdir -p build/fuzz
	clang++ -std=c++20 -O1 -g -Itools/examples $(FUZZ_SAN) -fsanitize=fuzzer \
	  tools/fuzz/resp_fuzz.cpp -o build/fuzz/resp_fuzz
	rm -rf build/fuzz/corpus_resp && mkdir -p build/fuzz/corpus_resp && \
	  cp tools/fuzz/corpus_resp/* build/fuzz/corpus_resp/
	timeout $$(( $(FUZZ_SECONDS) + 300 )) build/fuzz/resp_fuzz -max_total_time=$(FUZZ_SECONDS) \
	  -print_final_stats=1 -timeout=20 -rss_limit_mb=4096 -artifact_prefix=build/fuzz/resp- \
	  build/fuzz/corpus_resp > build/fuzz/resp_last.log 2>&1; \
	  status=$$?; tail -n 25 build/fuzz/resp_last.log; exit $$status
