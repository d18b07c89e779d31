# specd — one non-recursive Makefile. `make help` lists the targets.
#
# Variables you may override: CC, NVCC, CUDA_ARCH, SANITIZE (e.g. address,undefined), BUILD,
# OPT, MARCH (default -march=native; use -march=x86-64-v3 for binaries that run elsewhere), CUDA (1 builds the CUDA backend in kernels/ once it exists).

CC        ?= cc
NVCC      ?= nvcc
CUDA_ARCH ?= sm_90
CUDA      ?= 0
BUILD     ?= build
OPT       ?= -O2
MARCH     ?= -march=native
SANITIZE  ?=
FUZZ_SECONDS ?= 30

CPPFLAGS += -I. -D_GNU_SOURCE
CFLAGS   += -std=c11 $(OPT) $(MARCH) -g -Wall -Wextra -Werror -pthread -MMD -MP $(EXTRA_CFLAGS)
LDFLAGS  += -pthread
ifneq ($(SANITIZE),)
CFLAGS   += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=$(SANITIZE)
endif

# System libraries: the engine needs only libm, pthreads and PCRE2 (BPE pre-tokenizer); the
# services add ZeroMQ, msgpack-c, hiredis, libmicrohttpd, libyaml and cJSON.
ENGINE_LIBS  := -lpcre2-8 -lxxhash -lm
SERVICE_LIBS := -lzmq -lmsgpackc -lhiredis -lmicrohttpd -lyaml -lcjson

# ---- sources ---------------------------------------------------------------------------------
COMMON_SRC  := $(wildcard shared/*.c)
ENGINE_SRC  := $(wildcard worker/engine/*.c)
SERVICE_SRC := $(wildcard worker/service/*.c worker/cli/*.c)
CTL_SRC     := $(wildcard controller/*.c)
CLIENT_SRC  := $(wildcard clients/c/*.c)
PROG_SRC    := $(wildcard worker/bin/*.c controller/bin/*.c clients/c/bin/*.c tools/bin/*.c)
TEST_SRC    := $(wildcard tests/unit/test_*.c)
FUZZ_SRC    := $(wildcard tests/fuzz/fuzz_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIB_COMMON  := $(BUILD)/lib/libspecd_common.a
LIB_ENGINE  := $(BUILD)/lib/libspecd_engine.a
LIB_SERVICE := $(BUILD)/lib/libspecd_service.a
LIB_CTL     := $(BUILD)/lib/libspecd_ctl.a
LIB_CLIENT  := $(BUILD)/lib/libspecd_client.a
# Link order: dependents first.
ALL_LIBS    := $(LIB_CTL) $(LIB_SERVICE) $(LIB_CLIENT) $(LIB_ENGINE) $(LIB_COMMON)

PROGRAMS    := $(patsubst %.c,$(BUILD)/bin/%,$(notdir $(PROG_SRC)))
TESTS       := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TEST_OBJ    := $(call obj,tests/test.c $(wildcard tests/support/*.c))

.PHONY: all test test-fast asan fuzz fuzz-build bench format format-check clean help programs tests
all: programs tests

programs: $(PROGRAMS)
tests: $(TESTS)

help:
	@echo "make               build libraries, programs (build/bin) and tests (no GPU needed)"
	@echo "make test          every CPU test, plain and under ASan+UBSan, and the Python client's"
	@echo "                   tests; ends with 'N passed, N failed'"
	@echo "make test T=name   run only build/tests/test_<name>;  make test-fast: plain build only"
	@echo "make asan          the tests under AddressSanitizer + UndefinedBehaviorSanitizer"
	@echo "make fuzz          libFuzzer targets (clang), each for FUZZ_SECONDS=$(FUZZ_SECONDS)"
	@echo "make bench         speculative-decoding benchmark; writes docs/PERF.md tables"
	@echo "make format-check  clang-format check;  make format  rewrites in place"
	@echo "make clean         remove build/"

# ---- libraries -------------------------------------------------------------------------------
$(LIB_COMMON): $(call obj,$(COMMON_SRC))
$(LIB_ENGINE): $(call obj,$(ENGINE_SRC))
$(LIB_SERVICE): $(call obj,$(SERVICE_SRC))
$(LIB_CTL): $(call obj,$(CTL_SRC))
$(LIB_CLIENT): $(call obj,$(CLIENT_SRC))
$(BUILD)/lib/%.a:
	@mkdir -p $(@D)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

# ---- programs and tests ----------------------------------------------------------------------
define program_rule
$(BUILD)/bin/$(notdir $(basename $(1))): $(call obj,$(1)) $(ALL_LIBS)
	@mkdir -p $$(@D)
	$$(CC) $$(LDFLAGS) $$< $(ALL_LIBS) $(SERVICE_LIBS) $(ENGINE_LIBS) -o $$@
endef
$(foreach p,$(PROG_SRC),$(eval $(call program_rule,$(p))))

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(TEST_OBJ) $(ALL_LIBS)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $< $(TEST_OBJ) $(ALL_LIBS) $(SERVICE_LIBS) $(ENGINE_LIBS) -o $@

# Tests run from the repo root so that they find ../shared and the built programs. The Python
# client's tests run with Debian's python3 (which has python3-redis and pytest) when present.
PYTHON_TESTS ?= $(wildcard clients/python/tests tests/e2e)
ASAN_BUILD := build/asan
ASAN_TESTS := $(patsubst tests/unit/%.c,$(ASAN_BUILD)/tests/%,$(TEST_SRC))

# make test: every CPU test, then the same tests built with ASan+UBSan (long sweeps shortened),
# then the Python client's tests; one summary line at the end. make test T=name: one binary.
test: all
ifeq ($(T),)
	$(MAKE) --no-print-directory BUILD=$(ASAN_BUILD) SANITIZE=address,undefined OPT=-O1 tests
	@tests/run.sh $(TESTS) --env SPECD_TEST_QUICK=1 --env ASAN_OPTIONS=detect_leaks=1 \
	    $(ASAN_TESTS) $(if $(PYTHON_TESTS),tests/run_pytest.sh)
else
	@tests/run.sh $(BUILD)/tests/test_$(T)
endif

# Only the plain build's tests (faster while developing).
test-fast: all
	@tests/run.sh $(TESTS)

# The sanitizer run alone (long sweeps shortened).
asan:
	$(MAKE) --no-print-directory BUILD=$(ASAN_BUILD) SANITIZE=address,undefined OPT=-O1 tests
	@tests/run.sh --env SPECD_TEST_QUICK=1 $(ASAN_TESTS)

# ---- fuzzing (clang + libFuzzer) -------------------------------------------------------------
FUZZ_BUILD := build/fuzz
FUZZ_BINS  := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/%,$(FUZZ_SRC))
fuzz-build:
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=clang SANITIZE=address,undefined OPT=-O1 \
	    EXTRA_CFLAGS=-fsanitize=fuzzer-no-link $(FUZZ_BINS)
$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(ALL_LIBS)
	$(CC) $(LDFLAGS) -fsanitize=fuzzer $< $(ALL_LIBS) $(SERVICE_LIBS) $(ENGINE_LIBS) -o $@
fuzz: fuzz-build
	@for f in $(FUZZ_BINS); do \
	    name=$$(basename $$f); corpus=tests/fuzz/corpus/$${name#fuzz_}; \
	    mkdir -p build/fuzz/corpus/$$name; \
	    echo "fuzzing $$name for $(FUZZ_SECONDS)s"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        build/fuzz/corpus/$$name $$( [ -d $$corpus ] && echo $$corpus ) || exit 1; \
	done

# ---- benchmarks ------------------------------------------------------------------------------
bench: all
	tools/bench.sh

# ---- formatting ------------------------------------------------------------------------------
FORMAT_FILES := $(shell git ls-files '*.c' '*.h' '*.cu' '*.cuh' 2>/dev/null)
format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)
format:
	clang-format -i $(FORMAT_FILES)

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
