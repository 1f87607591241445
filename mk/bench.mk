# `make bench`: images/s of the Part B UNets (lua/fdm/unet.lua) in fdm and,
# in the same run, in PyTorch (bench/torch_bench.py) when python3 has torch.
# BENCH_ITERS (timed iterations, default 2), BENCH_WARMUP, BENCH_CONFIGS,
# BENCH_MODES, BENCH_TORCH=0, BENCH_OVERHEAD=0: see bench/bench.lua.
#
# FDM_CPU_ISA=avx2 forces the AVX2 path on an AVX-512 machine: OpenBLAS's
# Haswell kernels (OPENBLAS_CORETYPE, read when the library loads) and, for
# the PyTorch side, oneDNN capped at AVX2 (ONEDNN_MAX_CPU_ISA). fdm's own
# loops are compiled for the build's -march: `make bench-avx2` builds them for
# x86-64-v3 (AVX2 + FMA) in build-avx2/ and runs the bench with FDM_CPU_ISA=avx2.
ISA_ENV = $(if $(filter avx2 AVX2,$(FDM_CPU_ISA)),FDM_CPU_ISA=avx2 OPENBLAS_CORETYPE=Haswell ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2)
.PHONY: bench-avx2
bench: all
	$(LUA_ENV) $(ISA_ENV) lua5.4 bench/bench.lua
bench-avx2:
	$(MAKE) --no-print-directory BUILD=build-avx2 OPT="-O3 -march=x86-64-v3 -mtune=native" FDM_CPU_ISA=avx2 bench
