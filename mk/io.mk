# io (runtime/io/io_*.c, runtime/lua/lio.c): C test and libFuzzer targets.
C_TESTS += $(BUILD)/tests/test_io

$(BUILD)/tests/test_io: tests/c/test_io.c $(BUILD)/libfdm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libfdm.a -llua5.4 $(LDLIBS)

# `make fuzz FUZZ_SECONDS=60`: builds fuzz/fuzz_*.c with clang (ASan+UBSan,
# libFuzzer) and runs each target for FUZZ_SECONDS; FUZZ_TARGETS picks some.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= safetensors idx png
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_TARGETS="$(FUZZ_TARGETS)" bash fuzz/run.sh
