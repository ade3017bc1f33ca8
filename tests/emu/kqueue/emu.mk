# The kqueue emulator's self-test. Included by the main Makefile, or run standalone from the
# repository root: make -f tests/emu/kqueue/emu.mk emu-kqueue
#   EMU_CXX=clang++                       another compiler
#   EMU_SAN=address,undefined | thread    a sanitizer build (its own output directory)
EMU_KQ_DIR := tests/emu/kqueue
# Included, the including Makefile keeps its default goal (restored at the end).
EMU_KQ_SAVED_GOAL := $(.DEFAULT_GOAL)
EMU_CXX ?= g++
EMU_SAN ?=
EMU_KQ_COMMA := ,
EMU_KQ_FLAGS := -std=c++20 -O2 -g -Wall -Wextra -Wpedantic -Werror -I$(EMU_KQ_DIR) \
  $(if $(EMU_SAN),-fsanitize=$(EMU_SAN) -fno-sanitize-recover=all -fno-omit-frame-pointer)
EMU_KQ_OUT := build/emu/kqueue$(if $(EMU_SAN),-$(subst $(EMU_KQ_COMMA),-,$(EMU_SAN)))$(if \
  $(filter-out g++,$(EMU_CXX)),-$(notdir $(EMU_CXX)))

.PHONY: emu-kqueue
emu-kqueue: $(EMU_KQ_OUT)/selftest
	timeout 120 $(EMU_KQ_OUT)/selftest

$(EMU_KQ_OUT)/selftest: $(EMU_KQ_OUT)/kqueue.o $(EMU_KQ_OUT)/selftest.o
	$(EMU_CXX) $(EMU_KQ_FLAGS) $^ -o $@ -pthread

$(EMU_KQ_OUT)/%.o: $(EMU_KQ_DIR)/%.cpp $(EMU_KQ_DIR)/sys/event.h $(EMU_KQ_DIR)/emu.mk
	@mkdir -p $(EMU_KQ_OUT)
	$(EMU_CXX) $(EMU_KQ_FLAGS) -c $< -o $@

ifneq ($(EMU_KQ_SAVED_GOAL),)
.DEFAULT_GOAL := $(EMU_KQ_SAVED_GOAL)
endif
