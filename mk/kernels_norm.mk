# C test for the normalisation, softmax and GELU kernels (kernels/cpu/{norm,softmax,activation}.c)
$(BUILD)/tests/test_norm: tests/c/test_norm.c $(BUILD)/libfdm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libfdm.a $(LDLIBS)

C_TESTS += $(BUILD)/tests/test_norm
