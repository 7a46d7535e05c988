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

.PHONY: all deps test unit fuzz demo bench clean docs

all: rastro

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

rastro: $(OBJS)
	$(CC) $(CFLAGS) $(OBJS) -o $@ $(LDLIBS)

test: rastro
	scripts/test.sh

unit:
	scripts/test.sh --unit-only

demo:
	scripts/demo.sh

bench: rastro
	bench/run.sh

docs: rastro
	scripts/gen-docs.sh

clean:
	rm -rf $(BUILD) rastro
