# `make bench-gpu`: the Part B UNets on the GPU (bench/gpu_bench.lua run by
# build/fdm), fdm against PyTorch eager, bf16 autocast and torch.compile
# (bench/torch_gpu_bench.py) on the same GPU in the same run, ~3 minutes;
# a markdown table, and JSON in build/bench_gpu.json. TF32 matmuls and
# convolutions on both sides (FDM_TF32=0: strict float32 on both) and cuDNN
# algorithms timed on both sides (FDM_CUDNN_BENCHMARK=0: heuristics).
# Without a CUDA device it says so and succeeds. See the script's header for
# BENCH_GPU_BUDGET, BENCH_BOX, BENCH_LONG_BOX, BENCH_WORKLOADS, BENCH_TORCH,
# BENCH_PYTHON, BENCH_TORCH_MODES.
# `make bench-gpu-fake`: the fdm half on the test suite's fake device at tiny
# sizes, a check of the script on a machine without a GPU.
.PHONY: bench-gpu bench-gpu-fake
bench-gpu: all
	$(LUA_ENV) FDM_TF32=$${FDM_TF32:-1} FDM_CUDNN_BENCHMARK=$${FDM_CUDNN_BENCHMARK:-1} ./$(BUILD)/fdm bench/gpu_bench.lua

bench-gpu-fake: all $(FAKE_BACKEND)
	$(LUA_ENV) FDM_BENCH_DEVICE=fake ./$(BUILD)/fdm bench/gpu_bench.lua
