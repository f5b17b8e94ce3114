# dmsc build. `make` builds everything; `make test` installs what is missing,
# builds and runs every test; `make demo` runs the demo.
.DELETE_ON_ERROR:
.SECONDARY:
.PHONY: all deps test test-unit demo bench clean format

BUILD     ?= build
CC        ?= gcc
CLANG     ?= clang
BPFTOOL   ?= $(shell command -v bpftool 2>/dev/null || echo /usr/sbin/bpftool)
ARCH      := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

CFLAGS    ?= -O2 -g
WARN      := -Wall -Wextra -Werror
CPPFLAGS  += -Iinclude -Iuser/lib -I$(BUILD)
PKGS      := libbpf json-c
LIBS      := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lbpf -ljson-c) -lelf -lz

BPF_SRCS  := $(wildcard bpf/*.bpf.c)
BPF_OBJS  := $(patsubst bpf/%.bpf.c,$(BUILD)/%.bpf.o,$(BPF_SRCS))
SKELS     := $(patsubst bpf/%.bpf.c,$(BUILD)/%.skel.h,$(BPF_SRCS))
LIB_SRCS  := $(wildcard user/lib/*.c)
LIB_OBJS  := $(patsubst user/lib/%.c,$(BUILD)/lib/%.o,$(LIB_SRCS))
PROGS     := $(patsubst user/%.c,$(BUILD)/%,$(wildcard user/*.c))
TOOLS     := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(wildcard tests/tools/*.c))
UNIT_SRCS := $(wildcard tests/unit/*.c)
HEADERS   := $(wildcard include/dmsc/*.h user/lib/*.h bpf/*.h)

all: $(PROGS) $(TOOLS)

deps:
	scripts/install-deps.sh

$(BUILD) $(BUILD)/lib $(BUILD)/tools:
	mkdir -p $@

# vmlinux.h from the running kernel's BTF: CO-RE relocates field offsets at
# load time, so objects built here load on other kernels too.
$(BUILD)/vmlinux.h: | $(BUILD)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@

$(BUILD)/%.bpf.o: bpf/%.bpf.c $(BUILD)/vmlinux.h $(HEADERS) | $(BUILD)
	$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) $(WARN) \
		-Iinclude -I$(BUILD) -c $< -o $@

# bpftool rewrites the skeleton on every run; compare first so that user
# code is rebuilt only when the object really changed.
$(BUILD)/%.skel.h: $(BUILD)/%.bpf.o
	$(BPFTOOL) gen skeleton $< name $(subst -,_,$*) > $@.tmp
	if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; fi

$(BUILD)/lib/%.o: user/lib/%.c $(HEADERS) $(SKELS) | $(BUILD)/lib
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) -c $< -o $@

$(BUILD)/libdmsc.a: $(LIB_OBJS)
	ar rcs $@ $^

$(BUILD)/%: user/%.c $(BUILD)/libdmsc.a $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) $< $(BUILD)/libdmsc.a $(LIBS) -o $@

$(BUILD)/tools/%: tests/tools/%.c $(HEADERS) | $(BUILD)/tools
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) $< -o $@

$(BUILD)/unit-tests: $(UNIT_SRCS) $(BUILD)/libdmsc.a $(HEADERS)
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) $(UNIT_SRCS) $(BUILD)/libdmsc.a \
		-lcriterion $(LIBS) -o $@

test:
	scripts/install-deps.sh --if-missing
	$(MAKE) all $(BUILD)/unit-tests
	scripts/run-tests.sh

test-unit: $(BUILD)/unit-tests
	$(BUILD)/unit-tests

# The same-host datapath side by side: direct TCP, dmsc, one and two HAProxy
# hops. Prints figures and ratios, writes build/bench/bench.{txt,json,png};
# never fails on speed.
bench:
	scripts/install-deps.sh --if-missing
	$(MAKE) all
	scripts/bench-datapath.sh

demo:
	scripts/install-deps.sh --if-missing
	$(MAKE) all
	scripts/demo.sh

clean:
	rm -rf $(BUILD)

format:
	clang-format -i $(wildcard bpf/*.c user/*.c user/lib/*.c user/lib/*.h include/dmsc/*.h tests/unit/*.c tests/tools/*.c)
