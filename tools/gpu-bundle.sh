#!/bin/bash
# tools/gpu-bundle.sh: builds fdm and its CUDA backend here (Debian, the
# toolkit in /usr/local/cuda) and packs what the GPU machine lacks into
# build/gpu-bundle/ (git-ignored; it travels with the device run tool's
# `carry`): fdm-gpu.tar.xz holding
#   bin/fdm                    fdm linked to look in ../lib first (DT_RPATH)
#   bin/cudnn_probe            bench/cudnn_probe.cu (cuDNN's legacy vs graph API)
#   lib/fdm_backend_cuda.so    the CUDA plugin (cudart, libstdc++ static)
#   lib/core.so                the Lua module, for a stock lua5.4
#   lib/*.so.*                 every library ldd names for fdm and core.so,
#                              except the C/C++ runtime and loader (libc, libm,
#                              libmvec, libdl, librt, libpthread, libstdc++,
#                              libgcc_s, ld-linux) and CUDA's (libcuda, cuDNN,
#                              cuBLAS, cudart): the GPU machine has those, CUDA's
#                              in its PyTorch environment
#   MANIFEST                   git revision, build flags, file sizes
# The GPU machine has no Lua, busted, make, OpenBLAS, libpng or cairo;
# tools/gpu-check.sh unpacks this there and runs everything with bin/fdm.
# Prints the bundle's size and the tree's (the run tool carries 64 MiB in all).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
make -j"$JOBS" CUDA=1 all build/gpu/bin/fdm build/gpu/bin/cudnn_probe >/dev/null
STAGE=build/gpu-bundle-stage
OUT=build/gpu-bundle
rm -rf "$STAGE" "$OUT"
mkdir -p "$STAGE/bin" "$STAGE/lib" "$OUT"
cp build/gpu/bin/fdm "$STAGE/bin/fdm"
cp build/gpu/bin/cudnn_probe "$STAGE/bin/cudnn_probe"   # bench/cudnn_probe.cu (GPU_CHECK_PARTS=tune)
cp build/lua/fdm/fdm_backend_cuda.so build/lua/fdm/core.so "$STAGE/lib/"
strip --strip-debug "$STAGE/bin/fdm" "$STAGE/lib/core.so"

skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libmvec\.so|libdl\.so|librt\.so|libpthread\.so|libstdc\+\+|libgcc_s|libcuda\.so|libcudnn|libcublas|libcudart|libnvrtc|libnvJitLink)'
ldd build/gpu/bin/fdm build/lua/fdm/core.so | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
  while read -r name path; do
    if [[ "$name" =~ $skip ]]; then continue; fi
    cp -L "$path" "$STAGE/lib/$name"
  done
if ldd build/gpu/bin/fdm | grep -q "not found"; then echo "gpu-bundle: fdm has unresolved libraries here" >&2; exit 1; fi

{
  echo "fdm GPU bundle"
  echo "git: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m) $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
  echo "nvcc: $(make -s cuda-info 2>/dev/null)"
  echo "plugin needs: $(readelf -d build/lua/fdm/fdm_backend_cuda.so | awk '/NEEDED/ {gsub(/[\[\]]/, "", $5); printf "%s ", $5}')"
  echo "files:"
  (cd "$STAGE" && find . -type f | sort | xargs ls -l | awk '{printf "  %10d  %s\n", $5, $9}')
} > "$STAGE/MANIFEST"

XZ_OPT="-6 -T${JOBS}" tar -C "$STAGE" -cJf "$OUT/fdm-gpu.tar.xz" .
cp "$STAGE/MANIFEST" "$OUT/MANIFEST"
raw=$(du -sb "$STAGE" | cut -f1)
packed=$(du -sb "$OUT" | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
printf 'gpu-bundle: %s (%.1f MiB; %.1f MiB unpacked)\n' "$OUT" "$(echo "$packed / 1048576" | bc -l)" "$(echo "$raw / 1048576" | bc -l)"
printf 'gpu-bundle: tree %.1f MiB tracked + %.1f MiB untracked; with the bundle %.1f MiB of the 64 MiB the run tool carries\n' \
  "$(echo "$tree / 1048576" | bc -l)" "$(echo "${untracked:-0} / 1048576" | bc -l)" "$(echo "($tree + ${untracked:-0} + $packed) / 1048576" | bc -l)"
