# `make bench`: images/s of the Part B UNets (lua/fdm/unet.lua) in fdm and,
# in the same run, in PyTorch (bench/torch_bench.py) when python3 has torch.
# BENCH_ITERS (timed iterations, default 2), BENCH_WARMUP, BENCH_CONFIGS,
# BENCH_MODES, BENCH_TORCH=0, BENCH_OVERHEAD=0: see bench/bench.lua.
bench: all
	$(LUA_ENV) lua5.4 bench/bench.lua
