# emu.mk: builds and runs the event ports emulator's selftest (tests/emu/eventports).
#
#   make emu-eventports                         g++, -O2 -g, build/emu/eventports/selftest
#   make emu-eventports EMU_CXX=clang++         another compiler (build/emu/eventports-clang++)
#   make emu-eventports EMU_SAN=-fsanitize=address,undefined   (or -fsanitize=thread)
#
# Included by the main Makefile, and usable alone: make -f tests/emu/eventports/emu.mk
# emu-eventports. Every name here starts with EMU_ so that it cannot clash with the includer's.

EMU_CXX      ?= g++
EMU_SAN      ?=
EMU_DIR      := tests/emu/eventports
EMU_CXXFLAGS := -std=c++20 -O2 -g -Wall -Wextra -Wpedantic -Werror -I$(EMU_DIR) -pthread \
                $(EMU_SAN) $(if $(EMU_SAN),-fno-sanitize-recover=all -fno-omit-frame-pointer)
EMU_COMMA    := ,
# One build folder per compiler and sanitizer, so that flavours never share objects.
EMU_FLAVOUR  := $(if $(filter-out g++,$(notdir $(EMU_CXX))),-$(notdir $(EMU_CXX)))$(if \
                $(EMU_SAN),-$(subst $(EMU_COMMA),-,$(patsubst -fsanitize=%,%,$(filter \
                -fsanitize=%,$(EMU_SAN)))))
EMU_OUT      ?= build/emu/eventports$(EMU_FLAVOUR)
EMU_DOCTEST  ?= /usr/include/doctest/doctest.h

.PHONY: emu-eventports
emu-eventports: $(EMU_OUT)/selftest
	timeout 120 $(EMU_OUT)/selftest

$(EMU_OUT)/selftest: $(EMU_OUT)/eventports.o $(EMU_OUT)/selftest.o
	$(EMU_CXX) $(EMU_CXXFLAGS) $^ -o $@

$(EMU_OUT)/eventports.o: $(EMU_DIR)/eventports.cpp $(EMU_DIR)/port.h $(EMU_DIR)/emu.mk
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_CXXFLAGS) -c $< -o $@

$(EMU_OUT)/selftest.o: $(EMU_DIR)/selftest.cpp $(EMU_DIR)/port.h $(EMU_DIR)/emu.mk $(EMU_DOCTEST)
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_CXXFLAGS) -c $< -o $@
