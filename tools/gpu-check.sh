#!/bin/bash
# tools/gpu-check.sh OUTDIR: all of the GPU work of fdm in one run on the GPU
# machine (one H100, 16 cores, no make/Lua/busted/OpenBLAS there), under 5
# minutes: unpacks build/gpu-bundle/fdm-gpu.tar.xz (tools/gpu-bundle.sh, built
# here and carried), finds CUDA's libraries (the PyTorch environment's
# nvidia/{cudnn,cublas,cu13,cuda_runtime}/lib, else /usr/local/cuda), runs the
# parity suite (tests/cuda/parity.lua, what `make test-cuda` runs) and the GPU
# benchmark (bench/gpu_bench.lua, what `make bench-gpu` runs) with the
# bundle's fdm, and leaves at most 8 files in OUTDIR:
#   summary.txt     one line per step with its status, the parity count
#   env.txt         GPU, driver, libraries found, ldd of fdm and the plugin
#   parity.log      the parity suite's output
#   nn_edges.log    tests/cuda/nn_edges.lua (make test-cuda-nn: the NN kernels'
#                   rarer paths), when the tree has it
#   graphs.log      tests/cuda/graphs.lua (make test-cuda-graphs: CUDA graphs
#                   against eager runs), when the tree has it
#   bench-gpu.md    the benchmark's table (stdout)
#   bench_gpu.json  the benchmark's numbers
#   gpu-check.log   everything, in order
#   deepfloyd.log   (part deepfloyd) the IF check and the speed runs
#   tune.log        (part tune) cuDNN's candidates and the timings per workspace
# Exit status: 0 when the parity suite (and nn_edges, graphs) passed; the benchmark
# is informational.
#
# GPU_CHECK_DRY=1 runs here, without a GPU, everything up to the point where
# one is needed: unpack, library search, ldd, fdm's device list and its "no
# CUDA device" reason, then the parity suite, the graphs check (emulated
# graphs) and the benchmark script on the fake device (FDM_FAKE_BACKEND, build/tests/fdm_fake_backend.so) instead.
# Other knobs: GPU_BUNDLE (the archive), GPU_CHECK_WORK (where it is unpacked,
# default build/gpu-run), PARITY_TIMEOUT (s, default 150),
# BENCH_GPU_BUDGET (s, default 250), BENCH_PROFILE (default 1: the per-kernel
# profile in bench-gpu.md), BENCH_TORCH_MODES (default eager,reduce-overhead,
# eager_bf16), BENCH_COMPILE_WORKLOADS (default cc_train,uncond_train),
# GPU_CHECK_SKIP_BENCH=1; GPU_CHECK_PARTS (default parity,bench; "deepfloyd"
# runs tests/cuda/deepfloyd.lua and the IF speed figures into deepfloyd.log,
# about 3 minutes: a second call, `GPU_CHECK_PARTS=deepfloyd`), IF_SPEED_TIMEOUT
# (s per speed run, default 90); "tune" (about 4 minutes) times the sampler
# and the D=128 step at cuDNN workspace limits of 1 and 8 GiB with each
# plan's candidates logged; the parity suite and the same timings with
# FDM_CUDNN_API=graph (fdm's convolutions on cuDNN's graph API); then
# bench/cudnn_probe.cu (cuDNN's legacy API against its graph API, NCHW and
# NHWC, on the UNets' convolutions); all in tune.log, about 4 minutes.
set -uo pipefail
OUT=${1:?usage: tools/gpu-check.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DRY=${GPU_CHECK_DRY:-0}
BUNDLE=${GPU_BUNDLE:-$ROOT/build/gpu-bundle/fdm-gpu.tar.xz}
T0=$(date +%s)
exec > >(tee -a "$OUT/gpu-check.log") 2>&1
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"
elapsed() { echo $(( $(date +%s) - T0 ))s; }

echo "== gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ) dry=$DRY root=$ROOT"
if [ ! -f "$BUNDLE" ]; then
  summary "FAIL bundle: $BUNDLE is missing (run tools/gpu-bundle.sh here and carry build/gpu-bundle)"
  exit 2
fi
# unpacked inside the tree (build/ is git-ignored), not in a /tmp that may be noexec
WORK=${GPU_CHECK_WORK:-$ROOT/build/gpu-run}
rm -rf "$WORK" && mkdir -p "$WORK" || { summary "FAIL bundle: cannot create $WORK"; exit 2; }
if ! tar -C "$WORK" -xJf "$BUNDLE" 2>/dev/null; then
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$BUNDLE" "$WORK" ||
    { summary "FAIL bundle: cannot unpack $BUNDLE"; exit 2; }
fi
FDM="$WORK/bin/fdm"
PLUGIN="$WORK/lib/fdm_backend_cuda.so"
summary "ok   bundle: $(head -2 "$WORK/MANIFEST" | tail -1) ($(elapsed))"

# CUDA's libraries: the PyTorch environment's nvidia packages (versioned
# sonames only), torch's own lib/, and the toolkit's lib64
libdirs=""
if py=$(python3 - 2>/dev/null <<'PY'
import os
dirs = []
try:
    import nvidia
    for base in nvidia.__path__:
        for sub in ("cudnn", "cublas", "cu13", "cuda_runtime", "cuda_nvrtc", "nvjitlink"):
            d = os.path.join(base, sub, "lib")
            if os.path.isdir(d):
                dirs.append(d)
except Exception:
    pass
try:
    import torch
    d = os.path.join(os.path.dirname(torch.__file__), "lib")
    if os.path.isdir(d):
        dirs.append(d)
except Exception:
    pass
print(":".join(dirs))
PY
); then libdirs=$py; fi
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && libdirs="${libdirs:+$libdirs:}$d"
done
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FDM_CUDA_BACKEND="$PLUGIN" FDM_LUA_PATH="$ROOT/lua" OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} OMP_WAIT_POLICY=passive
{
  echo "== GPU"
  nvidia-smi -L 2>&1 || echo "(no nvidia-smi)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 || true
  echo "== python / torch"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available())' 2>&1 || true
  echo "== LD_LIBRARY_PATH"
  echo "$LD_LIBRARY_PATH" | tr ':' '\n'
  echo "== ldd bin/fdm"; ldd "$FDM"
  echo "== ldd fdm_backend_cuda.so"; ldd "$PLUGIN"
  echo "== MANIFEST"; cat "$WORK/MANIFEST"
} > "$OUT/env.txt" 2>&1
missing=$( (ldd "$FDM"; ldd "$PLUGIN") | grep "not found" | sort -u)
if [ -n "$missing" ]; then
  summary "FAIL libraries: $(echo "$missing" | awk '{print $1}' | tr '\n' ' ')(see env.txt)"
  [ "$DRY" = 1 ] || exit 2
else
  summary "ok   libraries: fdm and the CUDA plugin resolve every library ($(elapsed))"
fi

cd "$ROOT"
devs=$("$FDM" -e 'print(table.concat(fdm.devices(), ","))' 2>&1)
why=$("$FDM" -e 'local ok, e = pcall(fdm.zeros, {1}, {device = "cuda"}) print(ok and "cuda ok" or e)' 2>&1)
summary "info devices: $devs; cuda: $why"
# a script's default device (--device auto): the GPU when one answers
auto=$(env -u FDM_DEVICE "$FDM" scripts/partA/1_6_cfg.lua --steps 2 --out "$OUT/auto-device" 2>&1 | grep "running on" | head -1)
if [ "$DRY" = 1 ]; then summary "info --device auto: ${auto:-the CPU (no GPU here)}"
elif [ -n "${auto##*running on cuda*}" ] || [ -z "$auto" ]; then summary "FAIL parity auto-device: --device auto stayed on the CPU"
else summary "ok   --device auto: $auto"
fi

PARTS=${GPU_CHECK_PARTS:-parity,bench}
PARITY_DEVICE=cuda
if [ "$DRY" = 1 ]; then
  PARITY_DEVICE=fake
  export FDM_FAKE_BACKEND=${FDM_FAKE_BACKEND:-$ROOT/build/tests/fdm_fake_backend.so} FDM_PARITY_QUICK=1
  summary "info dry run: the parity suite and the benchmark run on the fake device"
elif [ "$devs" = "${devs/cuda/}" ]; then
  summary "FAIL device: fdm lists no CUDA device ($why)"
  exit 1
fi

has_part() { case ",$PARTS," in *",$1,"*) return 0;; esac; return 1; }

# a further check run by fdm: NAME (its log NAME.log), the variable naming
# its device, the script, its summary line's start, lines of the log to show;
# a failure counts as a parity failure (the exit status)
check() {
  local name=$1 devvar=$2 script=$3 line=$4 show=$5 rc l
  [ -f "$script" ] || return 0
  echo "== $name ($PARITY_DEVICE)"
  timeout "${PARITY_TIMEOUT:-150}" env "$devvar=$PARITY_DEVICE" "$FDM" "$script" > "$OUT/$name.log" 2>&1
  rc=$?
  tail -"$show" "$OUT/$name.log"
  l=$(grep -E "^$line|skipped" "$OUT/$name.log" | tail -1)
  if [ $rc -eq 0 ] && [ -n "$l" ]; then summary "ok   $name: $l ($(elapsed))"
  else summary "FAIL parity $name (rc $rc): ${l:-no summary line} (see $name.log)"
  fi
}
if has_part parity; then
  echo "== parity ($PARITY_DEVICE)"
  timeout "${PARITY_TIMEOUT:-150}" env FDM_PARITY_DEVICE=$PARITY_DEVICE "$FDM" tests/cuda/parity.lua > "$OUT/parity.log" 2>&1
  prc=$?
  tail -3 "$OUT/parity.log"
  pline=$(grep -E "^parity |^no .* device: skipped" "$OUT/parity.log" | tail -1)
  if [ $prc -eq 0 ] && [ -n "$pline" ]; then summary "ok   parity: $pline ($(elapsed))"
  elif [ $prc -eq 124 ]; then summary "FAIL parity: timed out after ${PARITY_TIMEOUT:-150}s ($(grep -c '^FAIL' "$OUT/parity.log") failures so far)"
  else summary "FAIL parity (rc $prc): ${pline:-no summary line} ($(grep -c '^FAIL' "$OUT/parity.log") FAIL lines, see parity.log)"
  fi
  check nn_edges FDM_EDGES_DEVICE tests/cuda/nn_edges.lua "nn_edges on " 2
  check graphs FDM_GRAPHS_DEVICE tests/cuda/graphs.lua "graphs on " 8
  [ -f "$OUT/graphs.log" ] && grep "^info speed" "$OUT/graphs.log" | while read -r l; do summary "$l"; done
fi

# DeepFloyd IF: the tiny folders against the CPU, then the speed of the real
# configurations with random weights drawn on the GPU (bench/deepfloyd.lua;
# TF32 and timed cuDNN algorithms, as bench-gpu),
# all in deepfloyd.log
if has_part deepfloyd; then
  check deepfloyd FDM_IF_DEVICE tests/cuda/deepfloyd.lua "deepfloyd on " 6
  IF_DEV=$PARITY_DEVICE
  IF_PRE=()   # the dry run's fake device is a plugin the script must load first
  [ "$DRY" = 1 ] && IF_PRE=(-e "fdm.load_backend(os.getenv('FDM_FAKE_BACKEND'))")
  ifspeed() {   # config precision [extra args]: one line of bench/deepfloyd.lua's result
    local cfg=$1 prec=$2 l
    shift 2
    l=$(timeout "${IF_SPEED_TIMEOUT:-90}" env FDM_TF32=1 FDM_CUDNN_BENCHMARK=1 "$FDM" "${IF_PRE[@]}" bench/deepfloyd.lua --config "$cfg" --device "$IF_DEV" --precision "$prec" "$@" 2>&1 |
      tee -a "$OUT/deepfloyd.log" | grep -E "^$cfg: seconds per" | tail -1)
    if [ -n "$l" ]; then summary "info deepfloyd $l ($(elapsed))"
    else summary "FAIL deepfloyd speed $cfg $prec: no result (see deepfloyd.log) ($(elapsed))"
    fi
  }
  if [ "$DRY" = 1 ]; then
    ifspeed t5-xxl bf16 --layers 1 --steps 1
    ifspeed if-i-m fp32 --steps 2 --graph
  else
    ifspeed if-i-m bf16 --steps 5 --graph   # against the eager bf16 line below
    # --profile: the kernel table of the last step in deepfloyd.log (where the GPU's time goes)
    for prec in fp32 bf16 fp16; do ifspeed if-i-m $prec --steps 3 $([ $prec = bf16 ] && echo --profile); done
    for prec in fp32 bf16; do ifspeed if-ii-m $prec --steps 3 $([ $prec = bf16 ] && echo --profile); done
    for prec in bf16 fp16; do ifspeed if-i-xl $prec --steps 3; done   # fp16: the weights read in place
    for prec in fp32 bf16; do ifspeed t5-xxl $prec --steps 3; done
  fi
fi

# cuDNN's choices for the sampler's forward and the D=128 step at the default
# workspace limit and at 8 GiB (FDM_CUDNN_LOG: each plan's candidates), all
# in tune.log: whether a larger workspace buys faster algorithms
if has_part tune; then
  tenv="FDM_CUDNN_LOG=1 FDM_TF32=1 FDM_CUDNN_BENCHMARK=1 BENCH_TORCH=0 BENCH_FDM_BF16=0 BENCH_FDM_GRAPH=0 BENCH_PROFILE=0"
  tenv="$tenv BENCH_WORKLOADS=cfg_sample,uncond_train BENCH_GPU_JSON=$WORK/tune.json"
  [ "$DRY" = 1 ] && tenv="$tenv FDM_BENCH_DEVICE=fake"
  : > "$OUT/tune.log"
  # tune_bench LABEL VAR=VALUE: the two workloads with that setting, a summary line
  tune_bench() {
    local label=$1 r
    echo "== tune: $2" >> "$OUT/tune.log"
    timeout 150 env $tenv "$2" "$FDM" bench/gpu_bench.lua >> "$OUT/tune.log" 2>&1
    r=$(sed -n "/^== tune: $2\$/,\$p" "$OUT/tune.log" | grep -E '^  fdm +(cfg_sample|uncond_train) ' |
      awk '{printf "%s %s img/s; ", $2, $3}')
    summary "info tune $label: ${r:-no result (see tune.log)} ($(elapsed))"
  }
  tune_bench "workspace 1024 MiB" FDM_CUDNN_WORKSPACE_MB=1024
  tune_bench "workspace 8192 MiB" FDM_CUDNN_WORKSPACE_MB=8192
  # fdm's convolutions on cuDNN's graph API (FDM_CUDNN_API=graph): the parity
  # suite, then the same two workloads
  echo "== tune: FDM_CUDNN_API=graph parity" >> "$OUT/tune.log"
  pdev=cuda
  [ "$DRY" = 1 ] && pdev=fake
  timeout 150 env FDM_CUDNN_API=graph FDM_PARITY_DEVICE=$pdev "$FDM" tests/cuda/parity.lua > "$WORK/parity-graph.log" 2>&1
  prc=$?
  grep -E "^FAIL|^parity " "$WORK/parity-graph.log" >> "$OUT/tune.log"
  summary "$([ $prc -eq 0 ] && echo "ok  " || echo "FAIL") graph-API parity: $(grep -E '^parity ' "$WORK/parity-graph.log" | tail -1) ($(elapsed))"
  tune_bench "graph API (1 GiB)" FDM_CUDNN_API=graph
  # cuDNN's legacy API (fdm's) against its graph API on the UNets' convolutions
  if [ -x "$WORK/bin/cudnn_probe" ]; then
    echo "== tune: bench/cudnn_probe.cu" >> "$OUT/tune.log"
    timeout 150 "$WORK/bin/cudnn_probe" "${PROBE_SECONDS:-90}" >> "$OUT/tune.log" 2>&1
    prc=$?
    grep -E "^sampler D=64 28x28 +N2000 .* fwd " "$OUT/tune.log" | tail -1 | sed 's/^/info probe /' | while read -r l; do summary "$l"; done
    summary "$([ $prc -eq 0 ] && echo "info" || echo "FAIL") cudnn_probe (rc $prc): $(grep -c ' | legacy ' "$OUT/tune.log") lines in tune.log ($(elapsed))"
  fi
fi

if has_part bench && [ "${GPU_CHECK_SKIP_BENCH:-0}" != 1 ]; then
  echo "== bench-gpu"
  if [ -x bench/gpu_bench.sh ]; then
    BENCH_GPU_JSON="$OUT/bench_gpu.json" timeout 240 bench/gpu_bench.sh > "$OUT/bench-gpu.md" 2>&1
    brc=$?
  elif [ -f bench/gpu_bench.lua ]; then
    # torch.compile only where the targets name it (the training steps), and
    # not max-autotune, whose autotuning alone outlasts this check
    benv="BENCH_GPU_JSON=$OUT/bench_gpu.json BENCH_GPU_BUDGET=${BENCH_GPU_BUDGET:-250} FDM_TF32=${FDM_TF32:-1} FDM_CUDNN_BENCHMARK=${FDM_CUDNN_BENCHMARK:-1}"
    benv="$benv BENCH_PROFILE=${BENCH_PROFILE:-1} BENCH_TORCH_MODES=${BENCH_TORCH_MODES:-eager,reduce-overhead,eager_bf16}"
    benv="$benv BENCH_COMPILE_WORKLOADS=${BENCH_COMPILE_WORKLOADS:-cc_train,uncond_train}"
    [ "$DRY" = 1 ] && benv="$benv FDM_BENCH_DEVICE=fake BENCH_TORCH=0"
    timeout 300 env $benv "$FDM" bench/gpu_bench.lua > "$OUT/bench-gpu.md" 2>&1
    brc=$?
  else
    echo "no bench/gpu_bench.lua or bench/gpu_bench.sh in this tree" > "$OUT/bench-gpu.md"
    brc=0
  fi
  tail -15 "$OUT/bench-gpu.md"
  summary "$([ $brc -eq 0 ] && echo "ok  " || echo "FAIL") bench-gpu (rc $brc): see bench-gpu.md ($(elapsed))"
fi

n=$(find "$OUT" -maxdepth 1 -type f | wc -l)
[ "$n" -le 8 ] || summary "warn OUTDIR holds $n files (8 expected at most)"
summary "done in $(elapsed)"
grep -q "^FAIL parity\|^FAIL deepfloyd" "$OUT/summary.txt" && exit 1
exit 0
