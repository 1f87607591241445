# `make test-cuda-nn`: the NN kernels' rarer paths on the GPU against the CPU
# (tests/cuda/nn_edges.lua, run by fdm; `make test-cuda` has the common ones).
# Strict float32 (no TF32) so the tolerances are the CPU's rounding; without a
# CUDA device it says so and passes as skipped.
.PHONY: test-cuda-nn
test-cuda-nn: all
	$(LUA_ENV) FDM_TF32=0 ./$(BUILD)/fdm tests/cuda/nn_edges.lua
