# minifuse - build, test, run, bench.
#   make            build bin/minifuse (CPU backend: OpenBLAS + OpenMP)
#   make test       set-up (installs what is missing), build, whole test suite
#   make run        set-up, build, evaluate the default model on 2 MPI ranks
#   make bench      performance ratios (docs/performance.md)
#   make asan       build bin/minifuse-asan and the tests under ASan/UBSan
#   make fuzz       every libFuzzer target for FUZZ_SECONDS (default 60) each (docs/fuzzing.md)
#   make fuzz-smoke every target for FUZZ_SMOKE_SECONDS (default 2) + the regression inputs (run by make test)
#   make CUDA=1     bin/minifuse with the CUDA backend too (objects in build-cuda/; cuda/README.md)
#   make test-gpu   the CUDA build's op-parity tests ("skipped: no CUDA device" counted where there is none)

CC      := mpicc
PKGS    := hdf5-openmpi jansson libpcre2-8 libcrypto
CSTD    := -std=c11 -D_GNU_SOURCE
WARN    := -Wall -Wextra
OPT     ?= -O3 -march=native -fno-fast-math -fno-trapping-math
INCS    := -Isrc -Impi -I/usr/include/x86_64-linux-gnu/openblas-openmp $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
CFLAGS  := $(CSTD) $(WARN) $(OPT) -fopenmp $(INCS) -MMD -MP
LDLIBS  := -fopenmp $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lopenblas -lm

BUILD   := $(if $(filter 1,$(CUDA)),build-cuda,build)
LIB_SRC := $(filter-out src/main.c,$(wildcard src/*.c src/*/*.c mpi/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/*.c)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
# small MPI programs the tests run under mpirun (tests/tools/*.c, one binary each)
TOOLS   := $(patsubst tests/tools/%.c,$(BUILD)/tests/tools/%,$(wildcard tests/tools/*.c))

# CUDA=1: every cuda/*.c by mpicc with -DMF_CUDA=1, every cuda/*.cu by nvcc (sm_80, sm_90 + compute_90 PTX),
# linked with cudart, cuBLAS(Lt) and NCCL; CPU and CUDA objects never share a tree.
CUDA_HOME ?= /usr/local/cuda
NVCC    ?= $(CUDA_HOME)/bin/nvcc
FLAVOR  := $(if $(filter 1,$(CUDA)),cuda,cpu)
ifeq ($(CUDA),1)
CU_SRC  := $(wildcard cuda/*.cu)
LIB_SRC += $(wildcard cuda/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CU_SRC:%.cu=$(BUILD)/%.o)
CFLAGS  += -DMF_CUDA=1 -I. -I$(CUDA_HOME)/include
NVFLAGS := -O3 -std=c++17 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
           -gencode arch=compute_90,code=compute_90 -DMF_CUDA=1 -I. -Isrc -Werror all-warnings \
           -Xcompiler -Wall,-Wextra,-Werror -MMD -MP
LDLIBS  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublas -lcublasLt -lnccl -lstdc++
$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@
endif

ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer

.PHONY: all test run bench asan setup clean fuzz fuzz-build fuzz-seeds fuzz-smoke test-gpu cuda-build FORCE

all: bin/minifuse

# bin/.flavor (cpu or cuda) changes only when the flavor does: switching relinks bin/minifuse
bin/.flavor: FORCE
	@mkdir -p bin; [ "$$(cat $@ 2>/dev/null)" = "$(FLAVOR)" ] || echo $(FLAVOR) > $@
bin/minifuse: $(BUILD)/src/main.o $(LIB_OBJ) bin/.flavor
	@mkdir -p bin
	$(CC) -o $@ $(filter %.o,$^) $(LDLIBS)

# the CUDA build, compiled and linked without touching bin/ (make test runs it: CI has nvcc, no GPU)
$(BUILD)/minifuse: $(BUILD)/src/main.o $(LIB_OBJ)
	$(CC) -o $@ $^ $(LDLIBS)
cuda-build:
	$(MAKE) CUDA=1 build-cuda/minifuse build-cuda/tests/run_tests
test-gpu:
	$(MAKE) -j$(shell nproc) CUDA=1 bin/minifuse build-cuda/tests/run_tests
	bash tests/run_gpu.sh build-cuda/tests/run_tests

# $(BUILD)/.cflags holds the flags the objects were built with and changes only when they do
# (OPT=..., a Makefile edit): every object then rebuilds (as bin/.flavor relinks)
$(BUILD)/.cflags: FORCE
	@mkdir -p $(BUILD); [ "$$(cat $@ 2>/dev/null)" = "$(CFLAGS)" ] || echo "$(CFLAGS)" > $@

$(BUILD)/%.o: %.c $(BUILD)/.cflags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/tests/run_tests: $(TEST_OBJ) $(LIB_OBJ) $(TOOLS)
	$(CC) -o $@ $(TEST_OBJ) $(LIB_OBJ) $(LDLIBS) -lcriterion

$(BUILD)/tests/tools/%: $(BUILD)/tests/tools/%.o $(LIB_OBJ)
	$(CC) -o $@ $^ $(LDLIBS)

# bench/loss_cost.c (bench/loss_cost.sh): the loss's cost in GEMM FLOPs, against the library's code
$(BUILD)/bench/loss_cost: $(BUILD)/bench/loss_cost.o $(LIB_OBJ)
	$(CC) -o $@ $^ $(LDLIBS)

# ASan/UBSan build of the binary and the tests, in a separate object tree.
ABUILD := build-asan
$(ABUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(ASAN_FLAGS) -fopenmp $(INCS) -MMD -MP -c $< -o $@
bin/minifuse-asan: $(ABUILD)/src/main.o $(LIB_SRC:%.c=$(ABUILD)/%.o)
	@mkdir -p bin
	$(CC) $(ASAN_FLAGS) -o $@ $^ $(LDLIBS)
$(ABUILD)/tests/run_tests: $(TEST_SRC:%.c=$(ABUILD)/%.o) $(LIB_SRC:%.c=$(ABUILD)/%.o)
	$(CC) $(ASAN_FLAGS) -o $@ $^ $(LDLIBS) -lcriterion
asan: bin/minifuse-asan $(ABUILD)/tests/run_tests

# libFuzzer targets (tests/fuzz/, docs/fuzzing.md): clang through Open MPI's
# wrapper (OMPI_CC=clang mpicc: the MPI and HDF5 headers and libraries of the
# build), ASan + UBSan (UB aborts), in their own object tree.
FBUILD  := build-fuzz
FUZZ_TARGETS := safetensors config gguf gguf_tokenizer llama2c tokenizer_bin rankings checkpoint tcache
FUZZ_CC := OMPI_CC=clang mpicc
FUZZ_FLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_BINS := $(FUZZ_TARGETS:%=$(FBUILD)/fuzz_%)
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 2
$(FBUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CSTD) $(WARN) -Wno-unknown-pragmas -Wno-pass-failed $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -fopenmp $(INCS) -Itests -MMD -MP -c $< -o $@
$(FBUILD)/fuzz_%: $(FBUILD)/tests/fuzz/fuzz_%.o $(LIB_SRC:%.c=$(FBUILD)/%.o)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)
# seeds: cut from the real models (make_seeds.py) and written by minifuse's own HDF5 writers (seed_h5)
$(BUILD)/tests/fuzz/seed_h5: $(BUILD)/tests/fuzz/seed_h5.o $(LIB_OBJ)
	$(CC) -o $@ $^ $(LDLIBS)
$(BUILD)/tests/fuzz/seed_h5.o: tests/fuzz/seed_h5.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -c $< -o $@
fuzz-build: $(FUZZ_BINS)
.SECONDARY: $(LIB_SRC:%.c=$(FBUILD)/%.o) $(FUZZ_TARGETS:%=$(FBUILD)/tests/fuzz/fuzz_%.o)
fuzz-seeds: $(BUILD)/tests/fuzz/seed_h5
	@rm -rf $(FBUILD)/seeds && mkdir -p $(FBUILD)/seeds
	python3 tests/fuzz/make_seeds.py $(FBUILD)/seeds
	OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 $(BUILD)/tests/fuzz/seed_h5 $(FBUILD)/seeds
fuzz: fuzz-build fuzz-seeds
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run_fuzz.sh $(FUZZ_TARGETS)
fuzz-smoke: fuzz-build fuzz-seeds
	FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) FUZZ_SMOKE=1 bash tests/fuzz/run_fuzz.sh $(FUZZ_TARGETS)

setup:
	bash scripts/setup.sh

test: setup
	$(MAKE) -j$(shell nproc) all $(BUILD)/tests/run_tests asan fuzz-build $(BUILD)/tests/fuzz/seed_h5
	@if [ -x $(NVCC) ] || [ "$$CI" = true ]; then $(MAKE) -j$(shell nproc) cuda-build; \
	else echo "cuda-build: skipped (no nvcc at $(NVCC); CI=true requires it)"; fi
	$(MAKE) fuzz-seeds
	bash tests/run_all.sh

run: setup
	$(MAKE) -j$(shell nproc) all
	bash scripts/run_default.sh

bench: setup
	$(MAKE) -j$(shell nproc) all
	bash bench/run_bench.sh

clean:
	rm -rf build build-cuda $(ABUILD) $(FBUILD) bin

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/src/main.d $(wildcard $(ABUILD)/*/*.d $(ABUILD)/*/*/*.d) \
    $(BUILD)/tests/fuzz/seed_h5.d
-include $(wildcard $(FBUILD)/*/*.d $(FBUILD)/*/*/*.d)
