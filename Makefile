# rastro build. `make` builds ./rastro (installing the Debian build
# dependencies first when they are missing and we are root); `make test` runs
# every test; `make demo` runs the seed's proof of concept.

CC ?= gcc
CLANG ?= clang
BPFTOOL ?= bpftool
BUILD := build
ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
	  -Isrc -Isrc/bpf -I$(BUILD) -I$(BUILD)/gen
LDLIBS := -lbpf -lelf -lz -lyaml -lcurl -lmicrohttpd -lprotobuf-c -lm
BPF_CFLAGS := -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_$(ARCH) -Wall -Werror \
	      -I$(BUILD) -Isrc/bpf

# Agent sources (everything but the BPF side).
SRCS := $(shell find src -name '*.c' ! -name '*.bpf.c' | sort)
OBJS := $(SRCS:src/%.c=$(BUILD)/obj/%.o)
HDRS := $(shell find src -name '*.h')

# Unit tests: every module but main.c, built with ASan + UBSan into an archive;
# a test links what it uses and may stub the rest.
SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
SAN_OBJS := $(LIB_SRCS:src/%.c=$(BUILD)/san/%.o)
UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(wildcard tests/unit/test_*.c))

# Fuzz targets (libFuzzer): clang, parsers and config only.
FUZZ_CFLAGS := -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
	       -std=gnu11 -D_GNU_SOURCE -Isrc -Isrc/bpf -I$(BUILD) -I$(BUILD)/gen -Wall -Werror \
	       -Wno-unused-parameter
FUZZ_OBJS := $(LIB_SRCS:src/%.c=$(BUILD)/fuzzobj/%.o)
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))

.PHONY: all deps test unit unit-bins fuzz-bins demo bench clean docs

# OUT: where the agent binary goes (parallel builds use BUILD=... OUT=...).
OUT ?= rastro

all: $(OUT)

deps:
	@scripts/install-deps.sh build

$(BUILD)/.deps-ok: scripts/install-deps.sh
	@scripts/install-deps.sh build --check-or-install
	@mkdir -p $(BUILD) && touch $@

$(BUILD)/vmlinux.h: | $(BUILD)/.deps-ok
	@mkdir -p $(BUILD)
	@test -r /sys/kernel/btf/vmlinux || { echo "rastro: /sys/kernel/btf/vmlinux is missing: building needs a kernel with BTF (CONFIG_DEBUG_INFO_BTF)" >&2; exit 1; }
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BUILD)/rastro.bpf.o: src/bpf/rastro.bpf.c src/bpf/rastro.h $(BUILD)/vmlinux.h
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/rastro.skel.h: $(BUILD)/rastro.bpf.o
	$(BPFTOOL) gen skeleton $< name rastro_bpf > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/%.o: src/%.c $(HDRS) $(BUILD)/rastro.skel.h | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(OUT): $(OBJS)
	$(CC) $(CFLAGS) $(OBJS) -o $@ $(LDLIBS)

$(BUILD)/san/%.o: src/%.c $(HDRS) $(BUILD)/rastro.skel.h | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN_FLAGS) -c $< -o $@

$(BUILD)/librastro-san.a: $(SAN_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/unit/%: tests/unit/%.c tests/unit/check.h $(BUILD)/librastro-san.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN_FLAGS) -Itests/unit $< -o $@ $(BUILD)/librastro-san.a $(LDLIBS)

unit-bins: $(UNIT_TESTS)

$(BUILD)/fuzzobj/%.o: src/%.c $(HDRS) $(BUILD)/rastro.skel.h | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -c $< -o $@

$(BUILD)/librastro-fuzz.a: $(FUZZ_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/fuzz/%: tests/fuzz/%.c $(BUILD)/librastro-fuzz.a
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< -o $@ $(BUILD)/librastro-fuzz.a $(LDLIBS)

fuzz-bins: $(FUZZ_TARGETS)

test: $(OUT)
	scripts/test.sh

unit:
	scripts/test.sh --unit-only

demo:
	scripts/demo.sh

bench: $(OUT)
	bench/run.sh

docs: $(OUT)
	scripts/gen-docs.sh

clean:
	rm -rf $(BUILD) $(OUT)
