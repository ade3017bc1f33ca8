# Distribution: the amalgamation and make install. Included by the Makefile, whose variables
# (BUILD, BACKEND, LIB, CXX, ZIG ...) it uses.
#
#   make amalgamation        build/dist/asyncdispatch.hpp and .cpp: the library as two files
#   make amalgamation-check  the suite, the examples (and their check) and the Windows suite under
#                            Wine, built from those two files alone with -Werror, and run; the
#                            library and the tools built by clang -Werror from them too; every
#                            other backend compiled from them
#   cross-check              also links the amalgamation's library and tools for x86_64 and
#                            arm64 macOS

.PHONY: amalgamation amalgamation-check cross-check-amalgamation cross-tools

# The generator reads the tree; --expect holds it to the Makefile's list of this backend's
# platform sources (the emulators aside, which the amalgamation never holds).
DIST_INPUTS := tools/amalgamate.py VERSION $(wildcard include/*.hpp include/asyncdispatch/*.hpp \
               src/*.cpp src/*.hpp platform/*/*.cpp platform/*/*.hpp)
$(DIST)/asyncdispatch.hpp $(DIST)/asyncdispatch.cpp &: $(DIST_INPUTS)
	python3 tools/amalgamate.py --out $(DIST) \
	  --expect $(BACKEND) $(filter-out tests/emu/%,$(PLATFORM_SRC))

amalgamation: $(DIST)/asyncdispatch.hpp $(DIST)/asyncdispatch.cpp

# AMALGAMATION=1 (see the Makefile) swaps the tree for the two files and leaves every other rule
# as it is, so these are the very programs `make test`, `examples-check` and `test-windows` build.
# The backends no build here uses (poll, the stub, event ports against the emulator's <port.h>)
# are forced as backend.hpp allows and compiled too: in one translation unit the sources of a
# backend can clash where their own files never did.
amalgamation-check: amalgamation
	$(MAKE) AMALGAMATION=1 BUILD=build/amalgamation WERROR=-Werror all test examples-check
	$(MAKE) AMALGAMATION=1 BUILD=build/amalgamation-clang CXX=clang++ WERROR=-Werror all
	for b in POLL STUB EVENTPORTS; do \
	  $(CXX) -std=c++20 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -Itests/emu/eventports \
	    -DASYNCDISPATCH_BACKEND_$$b=1 $(DIST)/asyncdispatch.cpp || exit 1; done
	sh tools/install.sh windows
	$(MAKE) AMALGAMATION=1 BACKEND=iocp BUILD=build/amalgamation-iocp WERROR=-Werror windows-run

# macOS picks kqueue by the amalgamation's own test of __APPLE__: its library and the tools are
# linked for both targets (cross-check links the test binary from the tree's same headers).
cross-check: cross-check-amalgamation
cross-check-amalgamation: $(ZIG) amalgamation
	@for t in $(CROSS_TARGETS); do \
	  $(MAKE) --no-print-directory AMALGAMATION=1 BACKEND=kqueue BUILD=build/cross/$$t-amalgamation \
	    CROSS=1 WERROR=-Werror CXX="$(abspath $(ZIG)) c++ -target $$t" AR="$(abspath $(ZIG)) ar" \
	    cross-tools || exit 1; \
	done
cross-tools: $(TOOLS)
	@! file $^ | grep -v 'Mach-O .* executable'
	@echo "cross-check: $(BUILD): $(words $^) Mach-O executables from the amalgamation"
