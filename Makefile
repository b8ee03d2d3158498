# Thin wrapper over CMake. `make run` and `make test` work on a fresh Debian 12
# machine: both install what is missing first.
PORT ?= 8000
WORKERS ?= 2
CONCURRENCY ?= $(shell nproc)
# broker (the default) or brokerless: README, "Topologies".
TOPOLOGY ?= broker
JOBS ?= 2
BUILD_DIR ?= build
SANITIZE_DIR ?= build-sanitize
FUZZ_DIR ?= build-fuzz
TSAN_DIR ?= build-tsan
FUZZ_SECONDS ?= 30
FUZZ_TARGETS = protocol value http

.PHONY: all deps build run test test-sanitize test-tsan fuzz format \
	format-check clean

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD_DIR)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j$(JOBS)

# Ctrl-C, SIGTERM or SIGHUP stops the stack (scripts/run-stack.sh says how).
# setpriv --pdeathsig: if make is killed (SIGKILL), the script gets SIGTERM
# and stops the stack. SKIP_BUILD=1 runs what is built as it is (the test of
# make run does, on the tree under test).
run: $(if $(SKIP_BUILD),,build)
	@setpriv --pdeathsig TERM bash scripts/run-stack.sh $(BUILD_DIR)/bin $(PORT) $(WORKERS) $(CONCURRENCY) $(TOPOLOGY)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j$(JOBS)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (clang).
test-sanitize: deps
	bash scripts/install-deps.sh clang libclang-rt-14-dev
	CXX=clang++ cmake -S . -B $(SANITIZE_DIR) -DCMAKE_BUILD_TYPE=Debug \
	  -DMONSOON_SANITIZE=address,undefined
	cmake --build $(SANITIZE_DIR) -j$(JOBS)
	cd $(SANITIZE_DIR) && ASAN_OPTIONS=detect_leaks=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j$(JOBS)

# The unit tests under ThreadSanitizer (clang): they run the threaded parts
# (front-end bridge and HTTP server, worker slots, broker) in-process. The
# integration tests are left out: building them and the binaries they start
# doubles the build time (CTest lists them as integration_tests_NOT_BUILT).
# tsan.supp silences uninstrumented libraries only.
TSAN_TESTS = common_unit_tests common_allocation_test broker_unit_tests \
  broker_shared_credit_test \
  workers_task_registry_test workers_builtin_tasks_test workers_worker_test \
  workers_slot_ledger_test \
  frontend_unit_tests cli_tests
test-tsan: deps
	bash scripts/install-deps.sh clang libclang-rt-14-dev
	CXX=clang++ cmake -S . -B $(TSAN_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DMONSOON_SANITIZE=thread
	cmake --build $(TSAN_DIR) -j$(JOBS) --target $(TSAN_TESTS)
	cd $(TSAN_DIR) && \
	  TSAN_OPTIONS="suppressions=$(CURDIR)/tsan.supp halt_on_error=1" \
	  ctest --output-on-failure -j$(JOBS) -E '^integration_tests_NOT_BUILT'

# The libFuzzer targets of fuzz/ (clang, ASan+UBSan), FUZZ_SECONDS each.
fuzz: deps
	bash scripts/install-deps.sh clang libclang-rt-14-dev
	CXX=clang++ cmake -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DMONSOON_FUZZ=ON -DMONSOON_BUILD_TESTS=OFF
	cmake --build $(FUZZ_DIR) -j$(JOBS) \
	  --target $(addsuffix _fuzzer,$(FUZZ_TARGETS))
	bash scripts/fuzz.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

FORMAT_FILES = $(shell git ls-files '*.cpp' '*.hpp')

format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf $(BUILD_DIR) $(SANITIZE_DIR) $(FUZZ_DIR) $(TSAN_DIR)
