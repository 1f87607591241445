# conv / conv_transpose / pooling / upsampling kernel tests (kernels/cpu/{conv,pool,upsample}.c)
$(BUILD)/tests/test_conv: tests/c/test_conv.c $(BUILD)/libfdm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libfdm.a $(LDLIBS)
C_TESTS += $(BUILD)/tests/test_conv
