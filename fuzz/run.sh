#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each for
# FUZZ_SECONDS (default 60). New inputs go to build/fuzz/corpus/<target>;
# the seeds (fuzz/make_seeds.py) are read from fuzz/corpus/<target>.
# Crashes are written to build/fuzz/crash-<target>-*; the run stops at the first.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${FUZZ_SECONDS:-60}
CLANG=${CLANG:-$(command -v clang-14 || command -v clang)}
OUT=build/fuzz
mkdir -p "$OUT"
CFLAGS="-DFDM_FUZZING -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -std=gnu11 -Iruntime/core -Iruntime/io $(pkg-config --cflags cairo)"
SUP="fuzz/fuzz_support.c runtime/io/io_atomic.c"
[ -d fuzz/corpus/png ] || python3 fuzz/make_seeds.py
build() { # target sources... libs...
  local t=$1; shift
  echo "== building $OUT/fuzz_$t"
  $CLANG $CFLAGS -o "$OUT/fuzz_$t" "fuzz/fuzz_$t.c" $SUP "$@"
}
build safetensors runtime/io/io_safetensors.c
build idx runtime/io/io_idx.c -lz
build png runtime/io/io_png.c -lpng -lz
status=0
for t in ${FUZZ_TARGETS:-safetensors idx png}; do
  mkdir -p "$OUT/corpus/$t"
  echo "== fuzzing $t for ${SECS}s"
  if ! "$OUT/fuzz_$t" -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
       -print_final_stats=1 -artifact_prefix="$OUT/crash-$t-" \
       "$OUT/corpus/$t" "fuzz/corpus/$t" 2>"$OUT/$t.log"; then
    echo "!! $t: crash, see $OUT/$t.log and $OUT/crash-$t-*"; status=1
  fi
  grep -E "^(stat::number_of_executed_units|#[0-9]+.*DONE)" "$OUT/$t.log" || tail -3 "$OUT/$t.log"
done
exit $status
