# minifuse - build, test, run, bench.
#   make            build bin/minifuse (CPU backend: OpenBLAS + OpenMP)
#   make test       set-up (installs what is missing), build, whole test suite
#   make run        set-up, build, evaluate the default model on 2 MPI ranks
#   make bench      performance ratios (docs/performance.md)
#   make asan       build bin/minifuse-asan and the tests under ASan/UBSan

CC      := mpicc
PKGS    := hdf5-openmpi jansson libpcre2-8
CSTD    := -std=c11 -D_GNU_SOURCE
WARN    := -Wall -Wextra
OPT     ?= -O3 -march=native -fno-fast-math
INCS    := -Isrc -Impi -I/usr/include/x86_64-linux-gnu/openblas-openmp $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
CFLAGS  := $(CSTD) $(WARN) $(OPT) -fopenmp $(INCS) -MMD -MP
LDLIBS  := -fopenmp $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lopenblas -lm

BUILD   := build
LIB_SRC := $(filter-out src/main.c,$(wildcard src/*.c src/*/*.c mpi/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/*.c)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
# small MPI programs the tests run under mpirun (tests/tools/*.c, one binary each)
TOOLS   := $(patsubst tests/tools/%.c,$(BUILD)/tests/tools/%,$(wildcard tests/tools/*.c))

ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer

.PHONY: all test run bench asan setup clean

all: bin/minifuse

bin/minifuse: $(BUILD)/src/main.o $(LIB_OBJ)
	@mkdir -p bin
	$(CC) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/tests/run_tests: $(TEST_OBJ) $(LIB_OBJ) $(TOOLS)
	$(CC) -o $@ $(TEST_OBJ) $(LIB_OBJ) $(LDLIBS) -lcriterion

$(BUILD)/tests/tools/%: $(BUILD)/tests/tools/%.o $(LIB_OBJ)
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

setup:
	bash scripts/setup.sh

test: setup
	$(MAKE) -j$(shell nproc) all $(BUILD)/tests/run_tests asan
	bash tests/run_all.sh

run: setup
	$(MAKE) -j$(shell nproc) all
	bash scripts/run_default.sh

bench: setup
	$(MAKE) -j$(shell nproc) all
	bash bench/run_bench.sh

clean:
	rm -rf $(BUILD) $(ABUILD) bin

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/src/main.d $(wildcard $(ABUILD)/*/*.d $(ABUILD)/*/*/*.d)
