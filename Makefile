# dmsc build. `make` builds everything; `make test` installs what is missing,
# builds and runs every test; `make demo` runs the demo.
.DELETE_ON_ERROR:
.SECONDARY:
.PHONY: all deps test test-unit test-kernels fuzz fuzz-build asan demo bench clean format

BUILD     ?= build
CC        ?= gcc
CLANG     ?= clang
BPFTOOL   ?= $(shell command -v bpftool 2>/dev/null || echo /usr/sbin/bpftool)
ARCH      := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

CFLAGS    ?= -O2 -g
WARN      := -Wall -Wextra -Werror
CPPFLAGS  += -Iinclude -Iuser/lib -I$(BUILD)
PKGS      := libbpf json-c libcurl
LIBS      := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lbpf -ljson-c -lcurl) -lelf -lz

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

# dmsc-l7: Node's http_parser (Debian's libhttp-parser-dev) and threads.
$(BUILD)/dmsc-l7: LIBS += -lhttp_parser -lpthread

$(BUILD)/%: user/%.c $(BUILD)/libdmsc.a $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) $< $(BUILD)/libdmsc.a $(LIBS) -o $@

$(BUILD)/tools/%: tests/tools/%.c $(HEADERS) | $(BUILD)/tools
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) $< -o $@

$(BUILD)/unit-tests: $(UNIT_SRCS) $(BUILD)/libdmsc.a $(HEADERS)
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) $(UNIT_SRCS) $(BUILD)/libdmsc.a \
		-lcriterion $(LIBS) -lhttp_parser -o $@

$(BUILD)/bench-cp: tests/bench/bench-cp.c $(BUILD)/libdmsc.a $(HEADERS)
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) $< $(BUILD)/libdmsc.a $(LIBS) -o $@

# Benchmarks print figures (and write JSON under build/); they never pass or
# fail on them. One line per benchmark.
# Benchmarks print figures (and write JSON to build/); they never fail on
# speed. One line per benchmark.
bench: all $(BUILD)/bench-cp
	scripts/install-deps.sh --if-missing --bench
	scripts/bench-control-plane.sh
	scripts/bench-datapath.sh
	scripts/bench-datapath.sh --first-bulk
	scripts/bench-l7.sh

test:
	scripts/install-deps.sh --if-missing
	$(MAKE) all $(BUILD)/unit-tests
	$(MAKE) asan fuzz-build
	scripts/run-tests.sh

# ---- kernel matrix (scripts/test-kernels.sh): the kernel suites inside
# virtme-ng guests booted from Debian's kernels, plus the running kernel.
# KERNELS: a subset, e.g. `make test-kernels KERNELS="host 5.10"`.
KERNELS ?=
test-kernels:
	scripts/install-deps.sh --if-missing
	scripts/install-matrix-deps.sh --if-missing
	$(MAKE) all
	scripts/test-kernels.sh $(KERNELS)

# ---- sanitizers: the library, dmscctl and the unit tests built again with
# ASan and UBSan into build-asan/ (scripts/run-tests.sh runs them).
ASAN_BUILD  := build-asan
ASAN_FLAGS  := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined
ASAN_OBJS   := $(patsubst user/lib/%.c,$(ASAN_BUILD)/lib/%.o,$(LIB_SRCS))

asan: $(ASAN_BUILD)/dmscctl $(ASAN_BUILD)/unit-tests

$(ASAN_BUILD)/lib:
	mkdir -p $@

$(ASAN_BUILD)/lib/%.o: user/lib/%.c $(HEADERS) $(SKELS) | $(ASAN_BUILD)/lib
	$(CC) $(ASAN_FLAGS) $(WARN) $(CPPFLAGS) -c $< -o $@

$(ASAN_BUILD)/libdmsc.a: $(ASAN_OBJS)
	ar rcs $@ $^

$(ASAN_BUILD)/dmscctl: user/dmscctl.c $(ASAN_BUILD)/libdmsc.a $(HEADERS)
	$(CC) $(ASAN_FLAGS) $(WARN) $(CPPFLAGS) $< $(ASAN_BUILD)/libdmsc.a $(LIBS) -o $@

$(ASAN_BUILD)/unit-tests: $(UNIT_SRCS) $(ASAN_BUILD)/libdmsc.a $(HEADERS)
	$(CC) $(ASAN_FLAGS) $(WARN) $(CPPFLAGS) $(UNIT_SRCS) $(ASAN_BUILD)/libdmsc.a \
		-lcriterion $(LIBS) -lhttp_parser -o $@

# ---- fuzzing (libFuzzer, clang): one harness per input parser,
# tests/fuzz/fuzz_NAME.c, linked with FUZZ_SRCS_NAME. Seeds are in
# tests/fuzz/corpus/NAME/, inputs that once crashed in
# tests/fuzz/regressions/NAME/ (run by every `make test`), a dictionary in
# tests/fuzz/NAME.dict if there is one.
# FUZZ_LIBS_NAME: what a harness links besides json-c.
FUZZ_BUILD    := build-fuzz
FUZZ_SECONDS  ?= 600
FUZZ_CC       ?= clang
FUZZ_FLAGS    := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer
FUZZ_SRCS_policy := user/lib/policy.c
# dmsc-l7's request parser (the helper links the same file; http_parser
# itself is Debian's library, not instrumented: coverage is of our code)
FUZZ_SRCS_http   := user/lib/l7_http.c
FUZZ_LIBS_http   := -lhttp_parser
FUZZ_NAMES    := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS     := $(patsubst %,$(FUZZ_BUILD)/fuzz_%,$(FUZZ_NAMES))

fuzz-build: $(FUZZ_BINS)

$(FUZZ_BUILD):
	mkdir -p $@

.SECONDEXPANSION:
$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $$(FUZZ_SRCS_$$*) $(HEADERS) | $(FUZZ_BUILD)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(WARN) $(CPPFLAGS) $< $(FUZZ_SRCS_$*) \
		$(FUZZ_LIBS_$*) $(shell pkg-config --libs json-c 2>/dev/null || echo -ljson-c) -o $@

# The long run: every harness for FUZZ_SECONDS, corpus kept in build-fuzz/.
fuzz: fuzz-build
	scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_NAMES)

test-unit: $(BUILD)/unit-tests
	$(BUILD)/unit-tests

demo:
	scripts/install-deps.sh --if-missing
	$(MAKE) all
	scripts/demo.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

format:
	clang-format -i $(wildcard bpf/*.c user/*.c user/lib/*.c user/lib/*.h include/dmsc/*.h tests/unit/*.c tests/tools/*.c)
