# dmsc build. `make` builds everything; `make test` installs what is missing,
# builds and runs every test; `make demo` runs the demo.
.DELETE_ON_ERROR:
.SECONDARY:
.SECONDEXPANSION:
.PHONY: all deps test test-unit test-kernels fuzz fuzz-build asan demo bench bench-etcd clean format

BUILD     ?= build
CC        ?= gcc
CLANG     ?= clang
BPFTOOL   ?= $(shell command -v bpftool 2>/dev/null || echo /usr/sbin/bpftool)
ARCH      := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

CFLAGS    ?= -O2 -g
WARN      := -Wall -Wextra -Werror
# One folder per layer (docs/architecture.md): common <- policy <- datapath
# <- dmscd, dmscctl; l7 <- policy, common; mtls (certificates, the tunnel
# between hosts: OpenSSL) <- policy, common. Each layer is one archive; each
# binary links the archives of the layers it uses, and only the members it
# calls are pulled in.
LAYERS    := common policy datapath dmscd dmscctl l7 mtls
CPPFLAGS  += -Iinclude $(patsubst %,-Iuser/%,$(LAYERS)) -I$(BUILD)
PKGS      := libbpf json-c libcurl libssl libcrypto
LIBS      := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lbpf -ljson-c -lcurl -lssl -lcrypto) -lelf -lz

# ---- kernel side: one folder per hook family, each file one compilation
# unit; the units of one object are linked by `bpftool gen object` (maps are
# weak definitions in bpf/common/maps.bpf.h, one per object after linking).
BPF_FAMILIES_dmsc_sock := sock_lb skb fastpath
BPF_FAMILIES_dmsc_tc   := tc
BPF_OBJECTS := dmsc_sock dmsc_tc
bpf_units    = $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.bpf.o,$(wildcard $(patsubst %,bpf/%/*.bpf.c,$(BPF_FAMILIES_$(1)))))
BPF_OBJS  := $(patsubst %,$(BUILD)/%.bpf.o,$(BPF_OBJECTS))
SKELS     := $(patsubst %,$(BUILD)/%.skel.h,$(BPF_OBJECTS))

# ---- userspace: the binaries' main files; every other .c of a layer's
# folder goes into that layer's archive.
PROG_SRCS := user/dmscctl/dmscctl.c user/dmscd/dmscd.c user/l7/dmsc-l7.c
PROGS     := $(patsubst %.c,$(BUILD)/%,$(notdir $(PROG_SRCS)))
prog_src   = $(filter %/$(1).c,$(PROG_SRCS))
layer_objs = $(patsubst user/%.c,$(2)/obj/%.o,$(filter-out $(PROG_SRCS),$(wildcard user/$(1)/*.c)))
LIBS_dmscctl   := dmscctl datapath policy mtls common
LIBS_dmscd     := dmscd datapath policy mtls common
LIBS_dmsc-l7   := l7 mtls datapath policy common
LIBS_tests     := dmscctl dmscd l7 datapath policy mtls common
archives       = $(patsubst %,$(2)/libdmsc-%.a,$(LIBS_$(1)))
TOOLS     := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(wildcard tests/tools/*.c))
# tests/unit/: pure, run as any user. tests/bpf/: load BPF programs
# (BPF_PROG_TEST_RUN, the pinned datapath), need root.
UNIT_SRCS := $(wildcard tests/unit/*.c)
BPFT_SRCS := $(wildcard tests/bpf/*.c)
HEADERS   := $(wildcard include/dmsc/*.h user/*/*.h bpf/*/*.h tests/bpf/*.h tests/unit/*.h tests/tools/*.h tests/fuzz/*.h)

all: $(PROGS) $(TOOLS)

deps:
	scripts/install-deps.sh

$(BUILD) $(BUILD)/tools:
	mkdir -p $@

# vmlinux.h from the running kernel's BTF: CO-RE relocates field offsets at
# load time, so objects built here load on other kernels too.
$(BUILD)/vmlinux.h: | $(BUILD)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(BUILD)/vmlinux.h $(HEADERS)
	@mkdir -p $(@D)
	$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) $(WARN) \
		-Iinclude -Ibpf/common -I$(BUILD) -c $< -o $@

$(BUILD)/%.bpf.o: $$(call bpf_units,$$*)
	$(BPFTOOL) gen object $@ $^

# bpftool rewrites the skeleton on every run; compare first so that user
# code is rebuilt only when the object really changed.
$(BUILD)/%.skel.h: $(BUILD)/%.bpf.o
	$(BPFTOOL) gen skeleton $< name $(subst -,_,$*) > $@.tmp
	if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; fi

# What build/ and build-asan/ (below) both have, from one template: $(1)
# the folder, $(2) the compiler flags. Each layer's objects, its archive,
# and the two test programs.
define build_rules
$(1)/obj/%.o: user/%.c $$(HEADERS) $$(SKELS)
	@mkdir -p $$(@D)
	$$(CC) $(2) $$(WARN) $$(CPPFLAGS) -c $$< -o $$@

$(1)/libdmsc-%.a: $$$$(call layer_objs,$$$$*,$(1))
	rm -f $$@
	ar rcs $$@ $$^

$(1)/unit-tests $(1)/bpf-tests: LIBS += -lhttp_parser
$(1)/unit-tests: SRCS := $$(UNIT_SRCS)
$(1)/bpf-tests: SRCS := $$(BPFT_SRCS)
$(1)/unit-tests $(1)/bpf-tests: $$$$(SRCS) $$(call archives,tests,$(1)) $$(HEADERS)
	$$(CC) $(2) $$(WARN) $$(CPPFLAGS) $$(SRCS) $$(call archives,tests,$(1)) \
		-lcriterion $$(LIBS) -o $$@
endef
$(eval $(call build_rules,$(BUILD),$$(CFLAGS)))

# dmsc-l7: Node's http_parser (Debian's libhttp-parser-dev) and threads.
$(BUILD)/dmsc-l7: LIBS += -lhttp_parser -lnghttp2 -lpthread

$(PROGS): $(BUILD)/%: $$(call prog_src,$$*) $$(call archives,$$*,$(BUILD)) $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) $< $(call archives,$*,$(BUILD)) $(LIBS) -o $@

# The test tools call the product's own helpers (user/common), not copies.
# dmsc-grpcsrv, the gRPC backend of scripts/bench-h2.sh, speaks HTTP/2 with
# Debian's libnghttp2, as dmsc-l7 does.
$(BUILD)/tools/dmsc-grpcsrv: TOOL_LIBS := -lnghttp2
$(BUILD)/tools/%: tests/tools/%.c $(BUILD)/libdmsc-common.a $(HEADERS) | $(BUILD)/tools
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) $< $(BUILD)/libdmsc-common.a $(TOOL_LIBS) -o $@

$(BUILD)/bench-cp: tests/bench/bench-cp.c $(call archives,dmscd,$(BUILD)) $(HEADERS)
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) $< $(call archives,dmscd,$(BUILD)) $(LIBS) -o $@

# Benchmarks print figures (and write JSON to build/); they never fail on
# speed. One line per benchmark.
bench: all $(BUILD)/bench-cp
	scripts/install-deps.sh --if-missing --bench
	scripts/bench-control-plane.sh
	scripts/bench-etcd.sh
	scripts/bench-datapath.sh
	scripts/bench-datapath.sh --first-bulk
	scripts/bench-datapath.sh --outside
	scripts/bench-l7.sh
	scripts/bench-health.sh
	scripts/bench-h2.sh
	BENCH_PERF=1 scripts/bench-mtls.sh

# The control plane with a real etcd and 20 simulated hosts, alone.
bench-etcd: all
	scripts/install-deps.sh --if-missing
	scripts/bench-etcd.sh

test:
	scripts/install-deps.sh --if-missing
	$(MAKE) all $(BUILD)/unit-tests $(BUILD)/bpf-tests
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

asan: $(ASAN_BUILD)/dmscctl $(ASAN_BUILD)/unit-tests $(ASAN_BUILD)/bpf-tests

$(ASAN_BUILD)/dmscctl: user/dmscctl/dmscctl.c $(call archives,dmscctl,$(ASAN_BUILD)) $(HEADERS)
	$(CC) $(ASAN_FLAGS) $(WARN) $(CPPFLAGS) $< $(call archives,dmscctl,$(ASAN_BUILD)) $(LIBS) -o $@

$(eval $(call build_rules,$(ASAN_BUILD),$$(ASAN_FLAGS)))

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
FUZZ_SRCS_policy := user/policy/policy.c user/policy/policy_json.c user/policy/policy_service.c \
		    user/policy/policy_health.c user/policy/policy_mtls.c user/common/addr.c \
		    user/common/array.c
# dmsc-l7's request parser (the helper links the same file; http_parser
# itself is Debian's library, not instrumented: coverage is of our code)
FUZZ_SRCS_http   := user/l7/l7_http.c user/common/http_list.c
FUZZ_LIBS_http   := -lhttp_parser
FUZZ_NAMES    := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS     := $(patsubst %,$(FUZZ_BUILD)/fuzz_%,$(FUZZ_NAMES))

fuzz-build: $(FUZZ_BINS)

$(FUZZ_BUILD):
	mkdir -p $@

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
	clang-format -i $(wildcard bpf/*/*.c bpf/*/*.h user/*/*.c user/*/*.h include/dmsc/*.h \\
		tests/unit/*.c tests/bpf/*.c tests/bpf/*.h tests/tools/*.c tests/tools/*.h tests/bench/*.c tests/fuzz/*.c tests/fuzz/*.h)
