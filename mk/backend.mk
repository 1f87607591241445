# The backend interface's checks (runtime/backend, tests/layering_spec.lua):
# the fake second device, a plugin built for the tests only (never installed),
# which tests/helpers.lua loads when FDM_FAKE_BACKEND names it.
FAKE_BACKEND := $(BUILD)/tests/fdm_fake_backend.so
$(FAKE_BACKEND): tests/c/fake_backend.c kernels/fdm_device.h kernels/fdm_kernels.h kernels/fdm_kernels_nn.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -o $@ $<
TEST_DEPS += $(FAKE_BACKEND)
