# io (runtime/io/io_*.c, runtime/lua/lio.c): C test and libFuzzer targets.
C_TESTS += $(BUILD)/tests/test_io

$(BUILD)/tests/test_io: tests/c/test_io.c $(BUILD)/libfdm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libfdm.a -llua5.4 $(LDLIBS)

# `make fuzz FUZZ_SECONDS=60`: builds fuzz/fuzz_*.c with clang (ASan+UBSan,
# libFuzzer) and runs each target for FUZZ_SECONDS; FUZZ_TARGETS picks some.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= safetensors idx png jpeg lua_io api
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_TARGETS="$(FUZZ_TARGETS)" bash fuzz/run.sh

# `make test SAN=1` also runs the API fuzzer (fuzz/api_fuzz.lua) for
# FDM_API_FUZZ_SECONDS (default 20) under ASan/UBSan; huge allocations fail
# cleanly (allocator_may_return_null) instead of exhausting the machine.
FDM_API_FUZZ_SECONDS ?= 20
API_FUZZ_ENV = ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:allocator_may_return_null=1:max_allocation_size_mb=2048
test-api-fuzz: all
	$(LUA_ENV) $(SAN_ENV) $(API_FUZZ_ENV) OMP_NUM_THREADS=1 lua5.4 fuzz/api_fuzz.lua --seconds $(FDM_API_FUZZ_SECONDS)
