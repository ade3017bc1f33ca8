# The one build of asyncdispatch for C++.
#
#   make              the library (build/lib/libasyncdispatch.a), the demo, the echo server and
#                     the examples
#   make run          build and run the demo
#   make test         build and run the test suite (tools/install.sh installs doctest when root)
#   make test-nopidfd the addProcess tests with ASYNCDISPATCH_NO_PIDFD=1 (the SIGCHLD fallback)
#   make examples-check  run the examples in tools/examples/ and check that each does its job
#   make check        everything CI runs: tests, tests under ASan+UBSan, TSan and valgrind, tests
#                     built with clang, each public header compiled alone, the stub backend
#                     compiled, formatting, test-nopidfd, examples-check, 60 s of fuzzing, a 60 s
#                     soak and test-windows
#   make format       clang-format every source file
#   make bench        the benchmark suite against libuv, libev, libevent, asio, Nim and a raw
#                     epoll floor (tools/install.sh bench installs them when root; ~11 min); writes
#                     build/bench/results.md, results.json and cpu_per_rt.svg
#   make bench-quick  the same, one case and short runs (~2 min)
#
#   make tsan         the suite under ThreadSanitizer (cross-thread events, several dispatchers)
#   make valgrind     the suite under valgrind's memcheck: no error, no leak
#   make fuzz         the libFuzzer harness of tools/fuzz/ for FUZZ_SECONDS (default 60) from its
#                     committed corpus (clang, ASan+UBSan)
#   make soak         build/bin/soak: 1,000 echo connections for SOAK_SECONDS (default 60)
#
#   make test-windows the suite cross-built for Windows (BACKEND=iocp) and run under Wine
#                     (tools/install.sh windows installs MinGW-w64 and Wine when root)
#
#   make test-poll    the suite on the poll(2) backend, natively (build/poll)
#   make asan-poll    the same under ASan+UBSan (build/asan-poll)
#   make test-eventports  the suite on the event ports backend (build/eventports); on Linux over
#                     the emulator of tests/emu/eventports, also with EMU_PORT_QUIRKS=3 (the
#                     historical ETIME and *nget behaviour: test-eventports-quirks)
#   make emu-eventports   the emulator's own selftest (tests/emu/eventports/emu.mk)
#
# BACKEND=epoll|eventports|poll|iocp|stub picks the backend (default: the host's; another one builds into
# build/<backend>); BUILD=dir puts the outputs elsewhere under build/; CXX=clang++ builds with clang.

CXX      ?= g++
# The host's backend unless told otherwise; another backend builds into its own folder.
UNAME    := $(shell uname -s)
# Any other POSIX system gets poll(2); the stub is built only when asked for by name.
NATIVE   := $(if $(filter Linux,$(UNAME)),epoll,$(if $(filter Darwin %BSD DragonFly,$(UNAME)),kqueue,$(if $(filter SunOS,$(UNAME)),eventports,poll)))
BACKEND  ?= $(NATIVE)
BUILD    ?= $(if $(filter $(NATIVE),$(BACKEND)),build,build/$(BACKEND))
OPT      ?= -O2 -g
WERROR   ?=
SANITIZE ?=

CXXFLAGS := -std=c++20 $(OPT) -Wall -Wextra -Wpedantic $(WERROR) $(SANITIZE) -Iinclude \
            -DASYNCDISPATCH_BACKEND_$(shell echo $(BACKEND) | tr a-z A-Z)=1 -MMD -MP
LDFLAGS  := $(SANITIZE)

# The readiness family: platform/posix/ runs the socket operations over any selector, and its
# signal and child pieces serve the kernels that lack signal or process filters.
POSIX_SRC := platform/posix/family.cpp platform/posix/net.cpp platform/posix/events.cpp \
             platform/posix/signals.cpp platform/posix/children.cpp

ifeq ($(BACKEND),epoll)
PLATFORM_SRC := platform/linux/selector.cpp platform/linux/kernel_objects.cpp $(POSIX_SRC)
else ifeq ($(BACKEND),poll)
PLATFORM_SRC := platform/poll/selector.cpp $(POSIX_SRC)
else ifeq ($(BACKEND),eventports)
PLATFORM_SRC := platform/illumos/selector.cpp $(POSIX_SRC)
ifeq ($(UNAME),Linux)
# No event ports here: the emulator over epoll goes into the same archive, and its <port.h> comes
# first on the include path, so a program builds as on illumos plus -Itests/emu/eventports.
PLATFORM_SRC += tests/emu/eventports/eventports.cpp
CXXFLAGS     += -Itests/emu/eventports
endif
else ifeq ($(BACKEND),stub)
PLATFORM_SRC := platform/stub/selector.cpp $(POSIX_SRC)
else ifeq ($(BACKEND),iocp)
# Cross-built with Debian's MinGW-w64 (its POSIX thread model: std::thread needs winpthreads),
# linked statically so Wine needs no MinGW DLLs. doctest.h is copied into the build folder:
# /usr/include must never be on a cross compiler's include path.
CXX          := x86_64-w64-mingw32-g++-posix
PLATFORM_SRC := platform/windows/family.cpp platform/windows/net.cpp platform/windows/events.cpp
CXXFLAGS     += -I$(BUILD)/include
LDFLAGS      += -static
LDLIBS       := -lws2_32 -lmswsock
else
$(error BACKEND=$(BACKEND) is not written yet: see the platform matrix in README.md)
endif

LIB_SRC  := $(wildcard src/*.cpp) $(PLATFORM_SRC)
LIB_OBJ  := $(LIB_SRC:%.cpp=$(BUILD)/obj/%.o)
LIB      := $(BUILD)/lib/libasyncdispatch.a
TEST_SRC := $(wildcard tests/*.cpp)
TEST_OBJ := $(TEST_SRC:%.cpp=$(BUILD)/obj/%.o)
TESTS    := $(BUILD)/bin/tests
TOOLS    := $(BUILD)/bin/demo $(BUILD)/bin/echo_server $(BUILD)/bin/reuseport_echo \
            $(BUILD)/bin/supervisor
HEADERS  := include/asyncdispatch.hpp $(wildcard include/asyncdispatch/*.hpp)
DOCTEST  := /usr/include/doctest/doctest.h

.PHONY: all run test test-run test-nopidfd test-poll asan-poll test-eventports test-eventports-quirks test-windows windows-run examples-check asan clang \
        headers stub check format format-check clean bench bench-quick bench-peers bench-bins \
        tsan valgrind fuzz soak
.DEFAULT_GOAL := all

all: $(LIB) $(TOOLS)

$(BUILD)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/%: $(BUILD)/obj/tools/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $< $(LIB) -o $@

$(BUILD)/bin/%: $(BUILD)/obj/tools/examples/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $< $(LIB) -o $@

$(BUILD)/bin/soak: $(BUILD)/obj/tools/soak/soak.o $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $< $(LIB) -o $@

run: $(BUILD)/bin/demo
	$(BUILD)/bin/demo

# doctest comes from Debian's doctest-dev, which tools/install.sh installs (as root) or names.
$(DOCTEST):
	sh tools/install.sh test

$(TEST_OBJ): | $(DOCTEST)

$(TESTS): $(TEST_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $(TEST_OBJ) $(LIB) -o $@

# The suite stops itself: a hang is a failure, not a stuck CI run.
test: $(TESTS)
	@echo "test: compiled out here: the Windows-only cases (#if defined(_WIN32): addSignal's refusal," \
	  "children started with CreateProcess, the IOCP dispatcher's own structures, newCustom)"
	timeout 600 $(TESTS)

test-run: test

# The addProcess cases again, with the SIGCHLD fallback that kernels without pidfd_open get.
test-nopidfd: $(TESTS)
	ASYNCDISPATCH_NO_PIDFD=1 timeout 600 $(TESTS) --test-case='addProcess*'

# The poll(2) backend, which every POSIX system without a native backend gets: the whole suite,
# natively, in its own folder. POLL_COMPILED_OUT names the cases it cannot run, and why.
POLL_COMPILED_OUT := none
test-poll:
	@echo 'test-poll: compiled out: $(POLL_COMPILED_OUT)'
	$(MAKE) BACKEND=poll WERROR=-Werror test
asan-poll:
	$(MAKE) BACKEND=poll BUILD=build/asan-poll OPT="-O1 -g" \
	  SANITIZE="-fsanitize=address,undefined -fno-omit-frame-pointer" test

# The event ports backend: the whole suite against the emulator (tests/emu/eventports), in its own
# folder; then again with EMU_PORT_QUIRKS=3, the kernels before illumos OS-7991 (ETIME returned
# with events, *nget left as it was on ETIME without one). EVENTPORTS_COMPILED_OUT names the
# cases that cannot apply, and why.
EVENTPORTS_COMPILED_OUT := none
test-eventports:
	@echo 'test-eventports: compiled out: $(EVENTPORTS_COMPILED_OUT)'
	$(MAKE) BACKEND=eventports WERROR=-Werror test
test-eventports-quirks:
	@echo 'test-eventports-quirks: compiled out: $(EVENTPORTS_COMPILED_OUT)'
	EMU_PORT_QUIRKS=3 $(MAKE) BACKEND=eventports WERROR=-Werror test

# The IOCP backend, cross-built and run under Wine with a private prefix inside build/iocp/ (the
# first run there takes about 10 s to create it). Every test file is built for it but those not
# listed yet, which the run names. Cases that cannot apply on Windows are compiled out with
# #if !defined(_WIN32) and a one-line reason; WIN_COMPILED_OUT names them so that the run says why.
WIN_TEST_SRC := $(TEST_SRC)
WIN_TEST_OBJ := $(WIN_TEST_SRC:%.cpp=$(BUILD)/obj/%.o)
WIN_TESTS    := $(BUILD)/bin/tests.exe
WIN_NOT_BUILT := $(filter-out $(WIN_TEST_SRC),$(wildcard tests/*.cpp))
WIN_COMPILED_OUT := tests/tcp.cpp: "acceptAddr: survives EMFILE without spinning and accepts \
                    once descriptors are free" (Windows has no RLIMIT_NOFILE to exhaust), "recv: \
                    Peek leaves the data in place" (Windows rejects Peek, as Nim does; a Windows case \
                    checks that) and, inside a case, an AF_UNIX socket (Windows does no overlapped \
                    I/O on them); tests/cancel.cpp: "cancel: a sendTo waiting for room (AF_UNIX \
                    datagram) never sends its datagram" (Windows has no AF_UNIX datagram sockets, \
                    and a UDP sendTo never waits); tests/signals.cpp: its 9 cases (Windows has no \
                    POSIX signals; a Windows case checks that addSignal says so); \
                    tests/processes.cpp: its 8 cases (fork, waitpid, pidfd and SIGCHLD), each \
                    replaced by a Windows case that starts tests.exe itself as the child; \
                    tests/loop.cpp, registry.cpp and dump.cpp: 9 cases on the selector (getIoHandler, \
                    its fds table and SelectorKey lines, RLIMIT_NOFILE, FD_CLOEXEC), each replaced \
                    by a Windows case on ioPort, handles, waits, CustomOverlapped and \
                    HANDLE_FLAG_INHERIT; tests/faults.cpp: its 3 cases on a batch of readiness \
                    reports going stale when a callback closes and reuses a number (a failure of \
                    readiness backends: IOCP reports completions of its own OVERLAPPEDs) and, inside \
                    the 100 MiB case, the check that the send completes only near the end (an \
                    overlapped WSASend hands the kernel all of it at once); \
                    tests/faults_threads.cpp: the signal storm (Windows has no POSIX signals)
WIN_SKIPPED  :=
WINE         := WINEPREFIX=$(abspath $(BUILD))/wineprefix WINEDEBUG=-all WINEDLLOVERRIDES=mscoree,mshtml= \
                /usr/lib/wine/wine64

test-windows:
	sh tools/install.sh windows
	$(MAKE) BACKEND=iocp windows-run

$(BUILD)/include/doctest/doctest.h: | $(DOCTEST)
	@mkdir -p $(dir $@)
	cp $(DOCTEST) $@

$(WIN_TEST_OBJ): | $(BUILD)/include/doctest/doctest.h

$(WIN_TESTS): $(WIN_TEST_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $(WIN_TEST_OBJ) $(LIB) $(LDLIBS) -o $@

windows-run: $(WIN_TESTS)
	@echo "test-windows: not built for Windows yet: $(or $(WIN_NOT_BUILT),none);" \
	  'compiled out: $(WIN_COMPILED_OUT)'
	timeout 600 env $(WINE) $(WIN_TESTS) $(if $(WIN_SKIPPED),--test-case-exclude="$(WIN_SKIPPED)")

# The examples run for real: each is started, used or signalled, and must exit 0 in seconds.
examples-check: $(BUILD)/bin/reuseport_echo $(BUILD)/bin/supervisor
	bash tools/examples/check.sh $(BUILD)/bin

# Without -Werror: g++ 12's -Wmaybe-uninitialized misfires on std::function inside std::regex
# under the sanitizers; the same code is -Werror clean in the other builds.
asan:
	$(MAKE) BUILD=build/asan SANITIZE="-fsanitize=address,undefined -fno-omit-frame-pointer" \
	  OPT="-O1 -g" test
clang:
	$(MAKE) BUILD=build/clang CXX=clang++ WERROR=-Werror test

# ThreadSanitizer over the whole suite: events triggered from other threads, a dispatcher per
# thread, signal storms. halt_on_error makes the first report a failure.
tsan:
	$(MAKE) BUILD=build/tsan SANITIZE="-fsanitize=thread" OPT="-O1 -g" build/tsan/bin/tests
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" timeout 900 build/tsan/bin/tests

# memcheck over the suite built without optimisation; any error or leak fails the run.
VALGRIND := valgrind --error-exitcode=9 --leak-check=full --show-leak-kinds=definite,indirect,possible \
            --errors-for-leak-kinds=definite,indirect,possible --track-fds=no --quiet
# Left out by name, with the reason printed: valgrind keeps descriptors of its own at the top of
# RLIMIT_NOFILE and refuses to change the limit, so the EMFILE case cannot set up its exhaustion.
# Valgrind 3.19 does not know pidfd_open (it warns at each call, and the selector falls back to
# SIGCHLD anyway), so the run asks for that fallback at once.
VALGRIND_EXCLUDE := acceptAddr: survives EMFILE*
valgrind:
	@command -v valgrind >/dev/null || sh tools/install.sh check
	$(MAKE) BUILD=build/valgrind OPT="-O1 -g" build/valgrind/bin/tests
	@echo "valgrind: left out: '$(VALGRIND_EXCLUDE)' (valgrind refuses to change RLIMIT_NOFILE)"
	ASYNCDISPATCH_NO_PIDFD=1 timeout 1800 $(VALGRIND) build/valgrind/bin/tests \
	  --test-case-exclude='$(VALGRIND_EXCLUDE)'

# The fuzzer: the library and tools/fuzz/dispatcher_fuzz.cpp built by clang with libFuzzer,
# ASan and UBSan; it runs from a copy of the committed corpus so CI never writes to the tree.
FUZZ_SECONDS ?= 60
# -fno-sanitize=function: clang 14 cannot build a coroutine with it under coverage instrumentation
# ("Cannot represent a difference across sections"); it only checks calls through mistyped
# function pointers. The library gets libFuzzer's coverage too (fuzzer-no-link).
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize=function -fno-sanitize-recover=all \
                -fno-omit-frame-pointer
fuzz:
	@echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, long) { return 0; }' | \
	  clang++ -x c++ -fsanitize=fuzzer - -o /dev/null 2>/dev/null || sh tools/install.sh check
	$(MAKE) BUILD=build/fuzz CXX=clang++ SANITIZE="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" OPT="-O1 -g" \
	  build/fuzz/lib/libasyncdispatch.a
	clang++ -std=c++20 -O1 -g -Iinclude -DASYNCDISPATCH_BACKEND_EPOLL=1 $(FUZZ_SAN) -fsanitize=fuzzer \
	  tools/fuzz/dispatcher_fuzz.cpp build/fuzz/lib/libasyncdispatch.a -o build/fuzz/dispatcher_fuzz
	rm -rf build/fuzz/corpus && mkdir -p build/fuzz/corpus && cp tools/fuzz/corpus/* build/fuzz/corpus/
	timeout $$(( $(FUZZ_SECONDS) + 300 )) build/fuzz/dispatcher_fuzz -max_total_time=$(FUZZ_SECONDS) \
	  -print_final_stats=1 -timeout=20 -rss_limit_mb=4096 -artifact_prefix=build/fuzz/ \
	  build/fuzz/corpus > build/fuzz/last.log 2>&1; \
	  status=$$?; tail -n 25 build/fuzz/last.log; exit $$status

# The soak test: 1,000 connections, random sizes, disconnects and resets; exits non-zero on
# any lost byte or any growth in descriptors or memory.
SOAK_SECONDS ?= 60
soak: $(BUILD)/bin/soak
	timeout $$(( $(SOAK_SECONDS) + 300 )) $(BUILD)/bin/soak --seconds $(SOAK_SECONDS) \
	  > $(BUILD)/soak.log; status=$$?; cat $(BUILD)/soak.log; exit $$status

# Each public header must compile on its own (the vendored headers stay honest).
headers: $(HEADERS:include/%.hpp=$(BUILD)/headers/%.o)
$(BUILD)/headers/%.o: include/%.hpp
	@mkdir -p $(dir $@)
	printf '#include <%s>\n' $*.hpp | $(CXX) $(CXXFLAGS) -MF /dev/null -x c++ -c - -o $@

# The stub backend is the porter's template: it must keep compiling, and say what is missing.
stub:
	$(MAKE) BUILD=build/stub BACKEND=stub WERROR=-Werror build/stub/bin/demo
	build/stub/bin/demo 2>&1 | grep "newSelector: not supported on this OS"

check:
	$(MAKE) format-check
	$(MAKE) WERROR=-Werror all test headers
	$(MAKE) WERROR=-Werror test-nopidfd
	$(MAKE) WERROR=-Werror examples-check
	$(MAKE) asan
	$(MAKE) clang
	$(MAKE) stub
	$(MAKE) tsan
	$(MAKE) valgrind
	$(MAKE) fuzz
	$(MAKE) WERROR=-Werror soak
	$(MAKE) WERROR=-Werror test-windows

SOURCES := $(shell find include src platform tests tools -name '*.cpp' -o -name '*.hpp' 2>/dev/null)
format:
	clang-format -i $(SOURCES)
format-check:
	clang-format --dry-run --Werror $(SOURCES)

clean:
	rm -rf build

# The benchmarks live in tools/bench/; each *.mk there adds its programs to BENCH_BINS. They
# are never part of `make check`: the peers they compare against are not the library's deps.
BENCH_BINS :=
include $(wildcard tools/bench/*.mk)

# The peers are installed first, then a fresh make (which sees them) builds the programs.
bench-peers:
	sh tools/install.sh bench
	$(MAKE) bench-bins
bench-bins: all $(BENCH_BINS)

bench: bench-peers
	python3 tools/bench/run.py

bench-quick: bench-peers
	python3 tools/bench/run.py --quick

include tests/emu/eventports/emu.mk

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null) $(wildcard build/bench/*.d)
