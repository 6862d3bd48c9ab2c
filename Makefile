# graind — the only build entry. `make help` lists the targets.

# ARCH=arm64 cross-builds for a Debian architecture other than this host's
# (multiarch: the target's -dev packages beside ours), into build/<arch>.
# Its BPF objects follow that kernel's BTF: KERNEL_BTF=FILE (make test-vm
# gives the VM kernel's).
HOST_ARCH := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
ARCH     ?= $(HOST_ARCH)
TRIPLET_amd64 := x86_64-linux-gnu
TRIPLET_arm64 := aarch64-linux-gnu
TRIPLET  := $(TRIPLET_$(ARCH))
ifeq ($(TRIPLET),)
$(error ARCH=$(ARCH) is not one graind builds for: amd64 or arm64)
endif
ifeq ($(ARCH),$(HOST_ARCH))
BUILD    ?= build
CC       := cc
PKG_CONFIG ?= pkg-config
else
BUILD    ?= build/$(ARCH)
CC       := $(TRIPLET)-gcc
PKG_CONFIG ?= $(TRIPLET)-pkg-config
endif
VERSION  := 0.1.0
CLANG    ?= clang
LLVM_STRIP ?= llvm-strip
PYTHON   ?= /usr/bin/python3
RUN_ARGS ?=

# Debian packages: to build and run, then what tests and benchmarks add.
DEB_BUILD := gcc make pkg-config libbpf-dev libxdp-dev libelf-dev zlib1g-dev \
	libmicrohttpd-dev libprotobuf-c-dev protobuf-c-compiler libsqlite3-dev \
	libjansson-dev libcurl4-openssl-dev libyaml-dev clang llvm bpftool iproute2 curl \
	libnghttp2-dev libgnutls28-dev libsodium-dev protobuf-compiler grpc-proto libjs-chart.js
DEB_TEST  := libcmocka-dev strace python3-pytest python3-requests python3-grpcio python3-h2 \
	python3-protobuf libclang-rt-14-dev python3-prometheus-client libbpf-tools \
	python3-botocore prometheus npm git debootstrap openssl minisign \
	systemd man-db chromium docker-registry skopeo xdp-tools
DEB_VM    := qemu-system-x86 qemu-system-arm qemu-user-static qemu-utils binfmt-support \
	debootstrap e2fsprogs python3-pytest
DEB_BENCH := wrk bpftrace openssl nghttp2-client python3-grpcio python3-protobuf protobuf-compiler python3-h2 \
	chromium

# A cross build needs the compiler and the target's libraries.
DEB_LIBS := libbpf-dev libxdp-dev libelf-dev zlib1g-dev libmicrohttpd-dev libprotobuf-c-dev \
	libsqlite3-dev libjansson-dev libcurl4-openssl-dev libyaml-dev libnghttp2-dev \
	libgnutls28-dev libsodium-dev libcmocka-dev
ifneq ($(ARCH),$(HOST_ARCH))
DEB_BUILD += gcc-$(TRIPLET) $(addsuffix :$(ARCH),$(DEB_LIBS))
endif

PKGS     := libbpf libxdp libelf libmicrohttpd libnghttp2 gnutls libsodium libprotobuf-c sqlite3 jansson yaml-0.1 zlib libcurl

# The flags pkg-config gives are only known once `deps` has installed the
# packages, so they live in $(BUILD)/config.mk, which a rule below writes
# after `deps`; make then reads it and starts over. Goals that build
# nothing do not need it (and must not install anything).
CONFIG_FREE := help deps deps-test deps-bench deps-vm peers clean
ifneq ($(filter-out $(CONFIG_FREE),$(or $(MAKECMDGOALS),all)),)
include $(BUILD)/config.mk
endif

WARN     := -Wall -Wextra -Werror -Wno-missing-field-initializers
CFLAGS   := -std=gnu11 -O2 -g $(WARN) -I. -I$(BUILD) -I$(BUILD)/gen \
	-DGRAIND_VERSION=\"$(VERSION)\" $(PKG_CFLAGS)
SANITIZE := -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined
# libcurl is not linked into the agent: the S3 sink loads it on first use
# (server/sink/s3.c). grainctl links it (CTL_LIBS).
LDLIBS   := $(PKG_LIBS) -lpthread -lm -ldl

GEN_C    := $(BUILD)/proto/graind.pb-c.c
GEN_H    := $(BUILD)/proto/graind.pb-c.h
# The standard gRPC services' protos (Debian's grpc-proto), compiled to C
# for the messages, and with ours into the descriptor set reflection serves.
GRPC_PROTO_DIR := /usr/share/grpc-proto
GRPC_PROTOS := grpc/health/v1/health.proto grpc/reflection/v1/reflection.proto
GRPC_GEN_C := $(patsubst %.proto,$(BUILD)/gen/%.pb-c.c,$(GRPC_PROTOS))
GRPC_GEN_H := $(GRPC_GEN_C:.c=.h)
GRPC_DESC := $(BUILD)/grpc.desc
LIB_SRC  := $(filter-out server/main.c server/grainctl/%,$(sort $(wildcard api/*.c store/*.c server/*.c server/*/*.c)))
# grainctl, the client: its own files, the agent's codec and schema, libcurl linked.
CTL_SRC  := $(sort $(wildcard server/grainctl/*.c)) server/util/codec.c server/util/pbmsg.c \
	server/util/gerr.c server/util/utf8.c server/util/clock.c server/util/sha256.c \
	server/util/declare.c server/util/yamldoc.c server/util/file.c
# The console's files (api/console.h): web/, and Debian's Chart.js with its
# licence. Each NAME=PATH is served as /ui/NAME (index.html as /).
CHARTJS  := /usr/share/javascript/chart.js/chart.min.js
CHARTJS_LICENSE := /usr/share/doc/libjs-chart.js/copyright
WEB_ASSETS := $(foreach f,$(sort $(wildcard web/*)),$(notdir $(f))=$(f)) \
	chart.min.js=$(CHARTJS) chart.js-LICENSE.txt=$(CHARTJS_LICENSE)
WEB_FILES := $(foreach a,$(WEB_ASSETS),$(lastword $(subst =, ,$(a))))
CONSOLE_H := $(BUILD)/console_assets.h
EMBED_S  := $(BUILD)/embed.S
# Built-in probes: bpf/<name>.bpf.c → $(BUILD)/bpf/<name>.bpf.o, embedded.
BUILTIN_BPF_SRC := $(sort $(wildcard bpf/*.bpf.c))
BUILTIN_BPF_OBJ := $(patsubst bpf/%.c,$(BUILD)/bpf/%.o,$(BUILTIN_BPF_SRC))
BPF_ARCH_amd64 := x86
BPF_ARCH_arm64 := arm64
BPF_ARCH := $(BPF_ARCH_$(ARCH))
ALL_SRC  := $(LIB_SRC) $(GEN_C)

OBJ      := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC)) $(BUILD)/obj/proto/graind.pb-c.o $(BUILD)/obj/embed.o \
	$(patsubst $(BUILD)/gen/%.c,$(BUILD)/obj/gen/%.o,$(GRPC_GEN_C))
ASAN_OBJ := $(patsubst %.c,$(BUILD)/asan/%.o,$(LIB_SRC)) $(BUILD)/asan/proto/graind.pb-c.o $(BUILD)/obj/embed.o \
	$(patsubst $(BUILD)/gen/%.c,$(BUILD)/asan/gen/%.o,$(GRPC_GEN_C))
CTL_OBJ  := $(patsubst %.c,$(BUILD)/obj/%.o,$(CTL_SRC)) $(BUILD)/obj/proto/graind.pb-c.o
CTL_ASAN_OBJ := $(patsubst %.c,$(BUILD)/asan/%.o,$(CTL_SRC)) $(BUILD)/asan/proto/graind.pb-c.o

UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/asan/tests/%,$(UNIT_SRC))

# BPF objects used by the tests: each little-endian, plus one big-endian.
TEST_BPF_SRC := $(sort $(wildcard tests/bpf/*.bpf.c))
TEST_BPF_OBJ := $(patsubst tests/bpf/%.c,$(BUILD)/tests/bpf/%.o,$(TEST_BPF_SRC)) \
	$(BUILD)/tests/bpf/accept.bpfeb.o
BPF_CFLAGS   := -g -O2 -Wall -I$(BUILD) -I/usr/include/$(TRIPLET)

.PHONY: all help deps deps-test deps-bench deps-vm run test test-vm vm-artifacts unit system bench clean \
	asan peers fuzz fuzz-ci fuzz-build install
.DELETE_ON_ERROR:

all: $(BUILD)/graind $(BUILD)/grainctl

help:
	@echo "make deps    install missing Debian packages (apt-get)"
	@echo "make         build $(BUILD)/graind and $(BUILD)/grainctl"
	@echo "make run     build and start graind in the foreground (RUN_ARGS=... adds flags)"
	@echo "make test    install test packages, build with ASan+UBSan, run every test"
	@echo "make asan    build the ASan+UBSan agent and unit tests in $(BUILD)/asan"
	@echo "make unit    run the unit tests"
	@echo "make system  run the system tests (pytest, tests/system)"
	@echo "make test-vm run the guest suite in VMs of Debian 12's own kernel (VM_ARCHES=$(VM_ARCHES))"
	@echo "make bench   run the benchmarks and print ratios"
	@echo "make fuzz    run every fuzz target for FUZZ_TIME seconds (default 60)"
	@echo "make install install graind, grainctl, the systemd unit and the man page"
	@echo "             under DESTDIR/PREFIX (PREFIX=$(PREFIX))"
	@echo "make clean   remove $(BUILD)/"

# A package counts as there when it is installed or an installed package
# provides it (NodeSource's nodejs provides npm, and conflicts with it).
# apt-get waits for a dpkg lock someone else holds instead of failing.
define install_missing
	@have=$$(dpkg-query -W -f='$${db:Status-Abbrev}|$${Package}, $${Provides}\n' 2>/dev/null | \
		sed -n 's/^ii *|//p' | tr ',' '\n' | sed 's/(.*)//; s/:.*//; s/ //g'); \
	missing=$$(for p in $(1); do case $$p in \
		*:*) dpkg-query -W -f='$${db:Status-Abbrev}' $$p 2>/dev/null | grep -q '^ii' || echo $$p;; \
		*) echo "$$have" | grep -qx "$$p" || echo $$p;; esac; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:" $$missing "(run as root to install)"; exit 1; fi; \
		echo "installing Debian packages:" $$missing; \
		for a in $$(echo $$missing | tr ' ' '\n' | sed -n 's/.*://p' | sort -u); do \
			dpkg --print-foreign-architectures | grep -qx $$a || dpkg --add-architecture $$a; done; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			-o DPkg::Lock::Timeout=600 --no-install-recommends $$missing >/dev/null; \
	fi
endef

deps:
	$(call install_missing,$(DEB_BUILD))

deps-test: deps
	$(call install_missing,$(DEB_TEST))

deps-bench: deps
	$(call install_missing,$(DEB_BENCH))

deps-vm: deps
	$(call install_missing,$(DEB_VM))

# Written after `deps` (see the include above); make then reads it and
# starts over. A pkg-config that fails is an error, not empty flags.
$(BUILD)/config.mk: Makefile | deps
	@mkdir -p $(BUILD)
	@cflags=$$($(PKG_CONFIG) --cflags $(PKGS)) && \
	libs=$$($(PKG_CONFIG) --libs $(filter-out libcurl,$(PKGS))) && \
	ctl=$$($(PKG_CONFIG) --libs libprotobuf-c jansson libcurl yaml-0.1 gnutls) && \
	printf 'PKG_CFLAGS := %s\nPKG_LIBS := %s\nCTL_LIBS := %s\n' "$$cflags" "$$libs" "$$ctl" > $@.tmp
	@mv $@.tmp $@

# ---------------------------------------------------------------- generated

$(GEN_C) $(GEN_H) &: proto/graind.proto
	@mkdir -p $(BUILD)
	protoc-c --c_out=$(BUILD) $<

$(GRPC_GEN_C) $(GRPC_GEN_H) &: $(addprefix $(GRPC_PROTO_DIR)/,$(GRPC_PROTOS))
	@mkdir -p $(BUILD)/gen
	protoc-c -I$(GRPC_PROTO_DIR) --c_out=$(BUILD)/gen $(GRPC_PROTOS)

$(GRPC_DESC): proto/graind.proto $(addprefix $(GRPC_PROTO_DIR)/,$(GRPC_PROTOS))
	@mkdir -p $(BUILD)
	protoc -Iproto -I$(GRPC_PROTO_DIR) --include_imports --descriptor_set_out=$@ \
		graind.proto $(GRPC_PROTOS) grpc/reflection/v1alpha/reflection.proto

# vmlinux.h follows the running kernel's BTF. The BTF file is new at each
# boot, so a stamp follows its time and the header is rewritten only when
# the dump differs: a reboot into the same kernel rebuilds no BPF object.
KERNEL_BTF ?= /sys/kernel/btf/vmlinux

$(KERNEL_BTF):
	@echo "$@ is missing: the BPF objects need a kernel with BTF (CONFIG_DEBUG_INFO_BTF=y)" >&2; exit 1

$(BUILD)/vmlinux.btf-stamp: $(KERNEL_BTF)
	@mkdir -p $(BUILD)
	bpftool btf dump file $(KERNEL_BTF) format c > $(BUILD)/vmlinux.h.tmp
	@if cmp -s $(BUILD)/vmlinux.h.tmp $(BUILD)/vmlinux.h; then rm $(BUILD)/vmlinux.h.tmp; \
	else mv $(BUILD)/vmlinux.h.tmp $(BUILD)/vmlinux.h; fi
	@touch $@

$(BUILD)/vmlinux.h: $(BUILD)/vmlinux.btf-stamp
	@test -f $@ || bpftool btf dump file $(KERNEL_BTF) format c > $@

# Web UI files embedded into the binary: symbols embed_<name>_start/_end;
# built-in BPF objects: symbols embed_bpf_<name>_start/_end.
$(EMBED_S): $(WEB_FILES) $(BUILTIN_BPF_OBJ) $(GRPC_DESC) Makefile
	@mkdir -p $(BUILD)
	@{ echo '.section .rodata'; \
	  echo ".global embed_grpc_desc_start"; echo ".global embed_grpc_desc_end"; \
	  echo "embed_grpc_desc_start:"; echo ".incbin \"$(abspath $(GRPC_DESC))\""; \
	  echo "embed_grpc_desc_end:"; echo ".byte 0"; \
	  for a in $(WEB_ASSETS); do \
		s=web_$$(echo $${a%%=*} | tr -c 'a-zA-Z0-9\n' '_'); \
		echo ".global embed_$${s}_start"; echo ".global embed_$${s}_end"; \
		f=$${a#*=}; case $$f in /*) ;; *) f=$(CURDIR)/$$f;; esac; \
		echo "embed_$${s}_start:"; echo ".incbin \"$$f\""; \
		echo "embed_$${s}_end:"; echo ".byte 0"; \
	  done; \
	  for f in $(BUILTIN_BPF_OBJ); do \
		s=bpf_$$(basename $$f .bpf.o | tr -c 'a-zA-Z0-9\n' '_'); \
		echo ".balign 8"; \
		echo ".global embed_$${s}_start"; echo ".global embed_$${s}_end"; \
		echo "embed_$${s}_start:"; echo ".incbin \"$(abspath $$f)\""; \
		echo "embed_$${s}_end:"; echo ".byte 0"; \
	  done; echo '.section .note.GNU-stack,"",@progbits'; } > $@

# The console's table of files (api/console.c); rewritten only when it changes.
$(CONSOLE_H): Makefile $(WEB_FILES)
	@mkdir -p $(BUILD)
	@for a in $(WEB_ASSETS); do \
		echo "CONSOLE_ASSET(\"$${a%%=*}\", embed_web_$$(echo $${a%%=*} | tr -c 'a-zA-Z0-9\n' '_'))"; \
	done > $@.tmp
	@cmp -s $@.tmp $@ && rm $@.tmp || mv $@.tmp $@
$(foreach d,obj asan fuzzobj,$(BUILD)/$(d)/api/console.o): $(CONSOLE_H)

$(BUILD)/obj/embed.o: $(EMBED_S)
	@mkdir -p $(dir $@)
	$(CC) -c $< -o $@

# ---------------------------------------------------------------- C

$(BUILD)/obj/%.o: %.c $(GEN_H) $(GRPC_GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/asan/%.o: %.c $(GEN_H) $(GRPC_GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SANITIZE) -MMD -MP -c $< -o $@

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-unused-parameter -c $< -o $@

$(BUILD)/asan/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SANITIZE) -Wno-unused-parameter -c $< -o $@

$(BUILD)/obj/proto/graind.pb-c.o: $(GEN_C)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-unused-parameter -c $< -o $@

$(BUILD)/asan/proto/graind.pb-c.o: $(GEN_C)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SANITIZE) -Wno-unused-parameter -c $< -o $@

$(BUILD)/graind: $(OBJ) $(BUILD)/obj/server/main.o
	$(CC) -o $@ $^ $(LDLIBS)

$(BUILD)/asan/graind: $(ASAN_OBJ) $(BUILD)/asan/server/main.o
	$(CC) $(SANITIZE) -o $@ $^ $(LDLIBS)

# Linked with cmocka, which the test packages bring.
$(BUILD)/asan/tests/%: tests/unit/%.c $(ASAN_OBJ) | deps-test
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SANITIZE) -MMD -MP -MF $@.d -MT $@ -o $@ $(filter %.c %.o,$^) $(LDLIBS) -lcmocka

$(BUILD)/grainctl: $(CTL_OBJ)
	$(CC) -o $@ $^ $(CTL_LIBS)

$(BUILD)/asan/grainctl: $(CTL_ASAN_OBJ)
	$(CC) $(SANITIZE) -o $@ $^ $(CTL_LIBS)

asan: $(BUILD)/asan/graind $(BUILD)/asan/grainctl $(UNIT_BIN)

# ---------------------------------------------------------------- BPF

$(BUILD)/tests/bpf/%.bpf.o: tests/bpf/%.bpf.c $(BUILD)/vmlinux.h
	@mkdir -p $(dir $@)
	$(CLANG) -target bpf $(BPF_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/tests/bpf/accept.bpfeb.o: tests/bpf/accept.bpf.c $(BUILD)/vmlinux.h
	@mkdir -p $(dir $@)
	$(CLANG) -target bpfeb $(BPF_CFLAGS) -MMD -MP -c $< -o $@

# The built-in probes, CO-RE against the running kernel's BTF. DWARF is
# stripped (BTF and its line info stay): the objects ship in the binary.
$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(BUILD)/vmlinux.h
	@mkdir -p $(dir $@)
	$(CLANG) -target bpf -D__TARGET_ARCH_$(BPF_ARCH) $(BPF_CFLAGS) -MMD -MP -c $< -o $@
	$(LLVM_STRIP) -g $@

# The LD_PRELOAD shim the fault-injection tests break the disk with.
FAULTFS := $(BUILD)/tests/faultfs.so
$(FAULTFS): tests/faultfs/faultfs.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O2 -g -Wall -Wextra -Werror -shared -fPIC -o $@ $< -ldl -lpthread

# ---------------------------------------------------------------- install

# The unit names the binary where PREFIX puts it; sysusers makes the user.
PREFIX  ?= /usr/local
SBINDIR := $(PREFIX)/sbin
BINDIR  := $(PREFIX)/bin
UNITDIR := $(PREFIX)/lib/systemd/system
SYSUSERSDIR := $(PREFIX)/lib/sysusers.d
MAN8DIR := $(PREFIX)/share/man/man8
COMPLETIONDIR := $(PREFIX)/share/bash-completion/completions

$(BUILD)/graind.service: server/graind.service.in
	@mkdir -p $(dir $@)
	sed 's|@SBINDIR@|$(SBINDIR)|g' $< > $@

install: deps $(BUILD)/graind $(BUILD)/grainctl $(BUILD)/graind.service
	install -D -m 0755 $(BUILD)/graind $(DESTDIR)$(SBINDIR)/graind
	install -D -m 0755 $(BUILD)/grainctl $(DESTDIR)$(BINDIR)/grainctl
	install -D -m 0644 $(BUILD)/graind.service $(DESTDIR)$(UNITDIR)/graind.service
	install -D -m 0644 server/graind.sysusers $(DESTDIR)$(SYSUSERSDIR)/graind.conf
	install -D -m 0644 server/graind.8 $(DESTDIR)$(MAN8DIR)/graind.8
	install -D -m 0644 server/grainctl/grainctl.bash $(DESTDIR)$(COMPLETIONDIR)/grainctl

# ---------------------------------------------------------------- run, test

run: deps $(BUILD)/graind
	$(BUILD)/graind $(RUN_ARGS)

unit: deps-test asan $(TEST_BPF_OBJ) $(BUILTIN_BPF_OBJ)
	@pass=0; fail=0; for t in $(UNIT_BIN); do \
		if GRAIND_TEST_BPF=$(BUILD)/tests/bpf GRAIND_BUILTIN_BPF=$(BUILD)/bpf $$t; then pass=$$((pass+1)); else fail=$$((fail+1)); fi; \
	done; echo "unit test programs: $$pass passed, $$fail failed"; [ $$fail = 0 ]

# The sinks' real peers (StatsD daemon, s3rver), pinned by the lockfile.
PEERS := tests/peers
$(PEERS)/node_modules/.package-lock.json: $(PEERS)/package.json $(PEERS)/package-lock.json | deps-test
	cd $(PEERS) && npm ci --no-audit --no-fund
	@touch $@

peers: $(PEERS)/node_modules/.package-lock.json

system: deps-test peers $(BUILD)/asan/graind $(BUILD)/asan/grainctl $(TEST_BPF_OBJ) $(FAULTFS)
	GRAIND_BIN=$(CURDIR)/$(BUILD)/asan/graind GRAIND_TEST_BPF=$(CURDIR)/$(BUILD)/tests/bpf \
		GRAINCTL_BIN=$(CURDIR)/$(BUILD)/asan/grainctl GRAIND_FAULTFS=$(CURDIR)/$(FAULTFS) \
		GRAIND_PROTO=$(CURDIR)/proto/graind.proto \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/system

test: unit system fuzz-ci

# Debian 12's own kernel under QEMU (tests/vm/): images cached outside the
# clone (GRAIND_VM_CACHE, default /var/cache/graind-vm). Another
# architecture's graind and test objects are cross-built first, against
# the BTF of the kernel its VM boots.
VM_ARCHES ?= amd64 arm64
VM_CROSS  := $(filter-out $(HOST_ARCH),$(VM_ARCHES))
test-vm: deps-vm vm-artifacts
	@for a in $(VM_CROSS); do \
		btf=$$(GRAIND_BIN=$(BUILD)/graind $(PYTHON) tests/vm/vmimage.py --btf $$a) || exit 1; \
		$(MAKE) --no-print-directory ARCH=$$a BUILD=$(BUILD)/$$a KERNEL_BTF=$$btf \
			vm-artifacts || exit 1; \
	done
	BUILD=$(CURDIR)/$(BUILD) GRAIND_VM_ARCHES="$(VM_ARCHES)" \
		$(PYTHON) -m pytest -q -p no:cacheprovider -rs tests/vm

# What a VM of ARCH runs: graind, the test and built-in BPF objects and the
# unit test programs (qemu-user does not pass bpf(2) through, so a foreign
# architecture's unit tests run in its VM).
vm-artifacts: $(BUILD)/graind $(TEST_BPF_OBJ) $(BUILTIN_BPF_OBJ) $(UNIT_BIN)

bench: deps-bench peers $(BUILD)/graind $(BUILD)/grainctl $(TEST_BPF_OBJ)
	GRAIND_BIN=$(CURDIR)/$(BUILD)/graind GRAINCTL_BIN=$(CURDIR)/$(BUILD)/grainctl \
		GRAIND_TEST_BPF=$(CURDIR)/$(BUILD)/tests/bpf BUILD=$(BUILD) \
		$(PYTHON) tests/bench/run.py

# ---------------------------------------------------------------- fuzz

# libFuzzer targets (tests/fuzz/fuzz_<name>.c), built by clang with the
# library compiled a second time for coverage, ASan and UBSan. Seeds come
# from the test objects, the built-in probes and the README's JSON bodies
# (tests/fuzz/seeds.py); what a run finds goes to $(BUILD)/fuzz/<name>/
# and fails it. `make fuzz FUZZ_TIME=300`; `make test` runs each for 30 s.
FUZZ_CC      ?= clang
FUZZ_TIME    ?= 60
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer
FUZZ_SRC     := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(FUZZ_SRC))
FUZZ_BIN     := $(patsubst %,$(BUILD)/fuzz/bin/fuzz_%,$(FUZZ_NAMES))
FUZZ_OBJ     := $(patsubst %.c,$(BUILD)/fuzzobj/%.o,$(LIB_SRC)) \
	$(BUILD)/fuzzobj/proto/graind.pb-c.o $(BUILD)/obj/embed.o \
	$(patsubst $(BUILD)/gen/%.c,$(BUILD)/fuzzobj/gen/%.o,$(GRPC_GEN_C))
FUZZ_MSGS    := $(BUILD)/fuzz/messages.h

# Every message type of the schema, in the order of the generated header:
# the codec targets pick one by the first input byte.
$(FUZZ_MSGS): $(GEN_H)
	@mkdir -p $(dir $@)
	grep -o '^extern const ProtobufCMessageDescriptor graind__[a-z0-9_]*__descriptor' $< | \
		sed 's/.* \(.*\)/\&\1,/' > $@.tmp
	@mv $@.tmp $@

# Kept between runs: make would otherwise delete them as intermediates.
.SECONDARY: $(FUZZ_OBJ)

$(BUILD)/fuzzobj/%.o: %.c $(GEN_H) $(GRPC_GEN_H) | deps-test
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(BUILD)/fuzzobj/proto/graind.pb-c.o: $(GEN_C) | deps-test
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CFLAGS) $(FUZZ_SAN) -Wno-unused-parameter -c $< -o $@

$(BUILD)/fuzzobj/gen/%.o: $(BUILD)/gen/%.c | deps-test
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CFLAGS) $(FUZZ_SAN) -Wno-unused-parameter -c $< -o $@

$(BUILD)/fuzz/bin/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_OBJ) $(FUZZ_MSGS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer -MMD -MP -MF $@.d -MT $@ \
		-o $@ $< $(FUZZ_OBJ) $(LDLIBS)

fuzz-build: $(FUZZ_BIN) $(TEST_BPF_OBJ) $(BUILTIN_BPF_OBJ)
	$(PYTHON) tests/fuzz/seeds.py --build $(BUILD) --out $(BUILD)/fuzz/seeds

# Each target for FUZZ_TIME seconds from its seeds and what earlier runs
# kept; a crash, leak or timeout leaves its input in $(BUILD)/fuzz/<name>/.
fuzz: fuzz-build
	@pass=0; fail=0; for t in $(FUZZ_NAMES); do \
		if BUILD=$(BUILD) FUZZ_TIME=$(FUZZ_TIME) tests/fuzz/run.sh $$t; then \
			pass=$$((pass + 1)); else fail=$$((fail + 1)); fi; \
	done; echo "fuzz targets: $$pass passed, $$fail failed"; [ $$fail = 0 ]

fuzz-ci:
	$(MAKE) --no-print-directory fuzz FUZZ_TIME=30

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
