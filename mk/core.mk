# C test for the element types' bulk conversions (runtime/core/dtype.c, kernels/cpu/linear.c)
$(BUILD)/tests/test_dtype: tests/c/test_dtype.c $(BUILD)/libfdm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libfdm.a $(LDLIBS)

C_TESTS += $(BUILD)/tests/test_dtype
