# Distribution: the amalgamation and make install. Included by the Makefile, whose variables
# (BUILD, BACKEND, LIB, CXX, ZIG ...) it uses.
#
#   make amalgamation        build/dist/asyncdispatch.hpp and .cpp: the library as two files
#   make amalgamation-check  the suite, the examples (and their check) and the Windows suite under
#                            Wine, built from those two files alone with -Werror, and run; the
#                            library and the tools built by clang -Werror from them too; every
#                            other backend compiled from them
#   make install             PREFIX=/usr/local (DESTDIR, includedir, libdir): the amalgamated
#                            header, libasyncdispatch.a, asyncdispatch.pc and the CMake package
#   make uninstall           removes exactly the files install wrote, and the CMake folder
#   make install-check       installs into a temporary prefix, builds tools/consumer with
#                            pkg-config and with CMake's find_package, runs both, uninstalls
#   cross-check              also links the amalgamation's library and tools for x86_64 and
#                            arm64 macOS

.PHONY: amalgamation amalgamation-check cross-check-amalgamation cross-tools install uninstall \
        install-check

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
# The suites build at -O1 without debug information: a third less compile time, and still the
# flow analysis GCC's warnings need; the tree's builds carry -O2 -g, as the clang build here does.
amalgamation-check: amalgamation
	$(MAKE) AMALGAMATION=1 BUILD=build/amalgamation OPT=-O1 WERROR=-Werror all test examples-check
	$(MAKE) AMALGAMATION=1 BUILD=build/amalgamation-clang CXX=clang++ WERROR=-Werror all
	for b in POLL STUB EVENTPORTS; do \
	  $(CXX) -std=c++20 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -Itests/emu/eventports \
	    -DASYNCDISPATCH_BACKEND_$$b=1 $(DIST)/asyncdispatch.cpp || exit 1; done
	sh tools/install.sh windows
	$(MAKE) AMALGAMATION=1 BACKEND=iocp BUILD=build/amalgamation-iocp OPT=-O1 WERROR=-Werror \
	  windows-run

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

# make install: the GNU variables. What goes where:
#   $(includedir)/asyncdispatch.hpp           the amalgamated header: every public header, each
#                                             backend's inside its #if (the tree's backend.hpp
#                                             reaches platform/ by relative path, so the tree's
#                                             headers cannot be installed apart from it)
#   $(libdir)/libasyncdispatch.a              the library `make` built, for BACKEND
#   $(libdir)/pkgconfig/asyncdispatch.pc      Cflags: the include path, the backend, -pthread
#   $(libdir)/cmake/asyncdispatch/            asyncdispatchConfig.cmake (the imported target
#                                             asyncdispatch::asyncdispatch) and its version file
# No -std in Cflags: a consumer compiles with -std=c++20 or later, and a -std there would
# override a newer one of its own (the last -std wins). CMake's target asks for cxx_std_20.
PREFIX     ?= /usr/local
includedir ?= $(PREFIX)/include
libdir     ?= $(PREFIX)/lib
pkgconfigdir := $(libdir)/pkgconfig
cmakedir     := $(libdir)/cmake/asyncdispatch
VERSION      := $(shell cat VERSION)
# The archive holds one backend; the define makes a consumer's header pick that one even when
# BACKEND was forced. Windows needs its socket libraries after the archive.
BACKEND_DEFINE  = ASYNCDISPATCH_BACKEND_$(shell echo $(BACKEND) | tr a-z A-Z)=1
SYSTEM_LIBS     = $(strip -pthread $(LDLIBS))
SIZEOF_VOID_P   = $(shell echo __SIZEOF_POINTER__ | $(CXX) -E -P -x c++ - 2>/dev/null | tr -d ' ')
# The .pc writes paths under the prefix as ${prefix}/..., so that pkg-config --define-prefix
# can relocate an installed tree.
PACKAGE_SED = -e 's|@VERSION@|$(VERSION)|g' -e 's|@PREFIX@|$(PREFIX)|g' \
  -e 's|@PC_INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(includedir))|g' \
  -e 's|@PC_LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(libdir))|g' \
  -e 's|@INCLUDEDIR@|$(includedir)|g' -e 's|@LIBDIR@|$(libdir)|g' \
  -e 's|@BACKEND_DEFINE@|$(BACKEND_DEFINE)|g' -e 's|@SYSTEM_LIBS@|$(SYSTEM_LIBS)|g' \
  -e 's|@CMAKE_SYSTEM_LIBS@|$(subst $() ,;,$(strip $(LDLIBS)))|g' \
  -e 's|@SIZEOF_VOID_P@|$(SIZEOF_VOID_P)|g'
INSTALLED := $(includedir)/asyncdispatch.hpp $(libdir)/libasyncdispatch.a \
             $(pkgconfigdir)/asyncdispatch.pc $(cmakedir)/asyncdispatchConfig.cmake \
             $(cmakedir)/asyncdispatchConfigVersion.cmake

install: $(LIB) $(DIST)/asyncdispatch.hpp
	@if [ "$(UNAME)$(CROSS)" = Linux ] && [ "$(BACKEND)" = kqueue -o "$(BACKEND)" = eventports ]; \
	  then echo "make install: BACKEND=$(BACKEND) runs over an emulator here; not installed" >&2; \
	  exit 1; fi
	@mkdir -p $(BUILD)/package
	for f in asyncdispatch.pc asyncdispatchConfig.cmake asyncdispatchConfigVersion.cmake; do \
	  sed $(PACKAGE_SED) tools/package/$$f.in > $(BUILD)/package/$$f || exit 1; done
	install -d $(DESTDIR)$(includedir) $(DESTDIR)$(pkgconfigdir) $(DESTDIR)$(cmakedir)
	install -m 644 $(DIST)/asyncdispatch.hpp $(DESTDIR)$(includedir)/asyncdispatch.hpp
	install -m 644 $(LIB) $(DESTDIR)$(libdir)/libasyncdispatch.a
	install -m 644 $(BUILD)/package/asyncdispatch.pc $(DESTDIR)$(pkgconfigdir)/asyncdispatch.pc
	install -m 644 $(BUILD)/package/asyncdispatchConfig.cmake \
	  $(BUILD)/package/asyncdispatchConfigVersion.cmake $(DESTDIR)$(cmakedir)/

# Only the CMake folder is the package's own; the others may hold other packages' files.
uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	rmdir $(DESTDIR)$(cmakedir) 2>/dev/null || true

# A consumer of the installed library, built both ways it is documented, each run; then the
# uninstall must leave no file behind, and a DESTDIR install must put every file under DESTDIR.
CHECK_PREFIX := $(abspath build/install-check)/prefix
CHECK_STAGE  := DESTDIR=$(abspath build/install-check)/stage PREFIX=/opt/asyncdispatch
install-check: $(LIB) $(DIST)/asyncdispatch.hpp
	@command -v cmake >/dev/null && command -v pkg-config >/dev/null || sh tools/install.sh check
	rm -rf build/install-check
	$(MAKE) --no-print-directory install PREFIX=$(CHECK_PREFIX) DESTDIR=
	PKG_CONFIG_PATH=$(CHECK_PREFIX)/lib/pkgconfig sh -c '$(CXX) -std=c++20 -Wall -Wextra \
	  -Wpedantic -Werror tools/consumer/main.cpp $$(pkg-config --cflags --libs asyncdispatch) \
	  -o build/install-check/consumer-pkgconfig'
	timeout 60 build/install-check/consumer-pkgconfig
	cmake -S tools/consumer -B build/install-check/cmake -DCMAKE_PREFIX_PATH=$(CHECK_PREFIX) \
	  -DCMAKE_CXX_COMPILER=$(CXX) -DCMAKE_COMPILE_WARNING_AS_ERROR=ON >/dev/null
	cmake --build build/install-check/cmake
	timeout 60 build/install-check/cmake/consumer
	$(MAKE) --no-print-directory uninstall PREFIX=$(CHECK_PREFIX) DESTDIR=
	@! find $(CHECK_PREFIX) -type f | grep . || { echo "install-check: left" >&2; exit 1; }
	$(MAKE) --no-print-directory install $(CHECK_STAGE)
	@test $$(find build/install-check/stage -type f | wc -l) -eq $(words $(INSTALLED))
	$(MAKE) --no-print-directory uninstall $(CHECK_STAGE)
	@! find build/install-check/stage -type f | grep . || { echo "install-check: left" >&2; exit 1; }
	@echo "install-check: pkg-config and CMake consumers built and ran; uninstall removed everything"
