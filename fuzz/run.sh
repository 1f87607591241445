#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each for
# FUZZ_SECONDS (default 60). New inputs go to build/fuzz/corpus/<target>;
# the seeds (fuzz/make_seeds.py) are read from fuzz/corpus/<target>.
# Crashes are written to build/fuzz/crash-<target>-*; the run stops at the first.
# Targets: safetensors, idx, png, jpeg (the parsers alone), lua_io (the loaders
# through their Lua bindings, lio.c, with the whole runtime built by clang),
# api (fuzz/api_fuzz.lua: random calls of the Lua API, on build-san when it
# exists, else build; reports calls, not coverage).
# libpng and libjpeg themselves are not instrumented (the Debian libraries),
# so the png and jpeg targets see the edges of io_png.c and io_jpeg.c only.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${FUZZ_SECONDS:-60}
CLANG=${CLANG:-$(command -v clang-14 || command -v clang)}
OUT=build/fuzz
mkdir -p "$OUT"
CFLAGS="-DFDM_FUZZING -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -std=gnu11 -Iruntime/core -Iruntime/io $(pkg-config --cflags cairo)"
SUP="fuzz/fuzz_support.c runtime/io/io_atomic.c"
[ -d fuzz/corpus/png ] || python3 fuzz/make_seeds.py
# jpeg seeds: the tiny test files (baseline, progressive, grayscale)
if [ ! -d fuzz/corpus/jpeg ]; then mkdir -p fuzz/corpus/jpeg; cp tests/data/jpeg/*.jpg fuzz/corpus/jpeg/; fi
build() { # target sources... libs...
  local t=$1; shift
  echo "== building $OUT/fuzz_$t"
  $CLANG $CFLAGS -o "$OUT/fuzz_$t" "fuzz/fuzz_$t.c" $SUP "$@"
}
TARGETS=${FUZZ_TARGETS:-safetensors idx png jpeg lua_io api}
want() { case " $TARGETS " in *" $1 "*) return 0;; esac; return 1; }
want safetensors && build safetensors runtime/io/io_safetensors.c
want idx && build idx runtime/io/io_idx.c -lz
want png && build png runtime/io/io_png.c -lpng -lz
want jpeg && build jpeg runtime/io/io_jpeg.c -ljpeg
if want lua_io; then
  # the whole runtime, instrumented (fuzzer-no-link), linked with the target
  OBJ=$OUT/obj; mkdir -p "$OBJ"
  RCFLAGS="-DFDM_FUZZING -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fopenmp -std=gnu11 \
    $(for d in core backend ops autograd io lua app; do printf -- '-Iruntime/%s ' $d; done) -Ikernels/cpu \
    $(pkg-config --cflags lua5.4 cairo)"
  SRCS=$(ls runtime/{core,backend,ops,autograd,io,lua}/*.c kernels/cpu/*.c)
  echo "== building the runtime for lua_io"
  for f in $SRCS; do echo "$f"; done | xargs -P "${FUZZ_JOBS:-2}" -I{} sh -c \
    'o='"$OBJ"'/$(echo {} | tr / _).o; [ "$o" -nt {} ] || '"$CLANG $RCFLAGS"' -c {} -o "$o"'
  BLAS_DIR=/usr/lib/$(gcc -print-multiarch)/openblas-openmp
  $CLANG $CFLAGS -fopenmp $(pkg-config --cflags lua5.4) -o "$OUT/fuzz_lua_io" fuzz/fuzz_lua_io.c "$OBJ"/*.o \
    -llua5.4 -L"$BLAS_DIR" -Wl,-rpath,"$BLAS_DIR" -lopenblas -lpng -ljpeg -lz -lgif -lm $(pkg-config --libs cairo)
  # seeds: each loader's seeds behind its selector byte
  if [ ! -d "$OUT/seeds/lua_io" ]; then
    mkdir -p "$OUT/seeds/lua_io"
    for f in fuzz/corpus/idx/*; do { printf '\000'; cat "$f"; } > "$OUT/seeds/lua_io/idx-$(basename "$f")"; done
    for f in fuzz/corpus/png/*; do { printf '\001'; cat "$f"; } > "$OUT/seeds/lua_io/png-$(basename "$f")"; done
    for f in fuzz/corpus/safetensors/*; do { printf '\004'; cat "$f"; } > "$OUT/seeds/lua_io/st-$(basename "$f")"; done
  fi
fi
status=0
for t in $TARGETS; do
  if [ "$t" = api ]; then
    B=build; [ -f build-san/lua/fdm/core.so ] && B=build-san
    echo "== fuzzing api for ${SECS}s ($B)"
    env=(LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;;" LUA_CPATH="$PWD/$B/lua/?.so;;" OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive)
    if [ "$B" = build-san ]; then
      env+=(LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
            ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:max_allocation_size_mb=2048
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
      cmd="env ${env[*]@Q} lua5.4 fuzz/api_fuzz.lua --seconds $SECS"
    else
      cmd="ulimit -v 8000000; env ${env[*]@Q} lua5.4 fuzz/api_fuzz.lua --seconds $SECS"
    fi
    if ! bash -c "$cmd" > "$OUT/api.log" 2>&1; then
      echo "!! api: failure, see $OUT/api.log (rerun with its seed and --verbose)"; status=1
    fi
    grep -E "^api_fuzz: (seed|[0-9]+ calls)" "$OUT/api.log" || tail -3 "$OUT/api.log"
    continue
  fi
  SEEDS=fuzz/corpus/$t; [ "$t" = lua_io ] && SEEDS=$OUT/seeds/lua_io
  mkdir -p "$OUT/corpus/$t"
  echo "== fuzzing $t for ${SECS}s"
  if ! "$OUT/fuzz_$t" -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
       -print_final_stats=1 -artifact_prefix="$OUT/crash-$t-" \
       "$OUT/corpus/$t" "$SEEDS" 2>"$OUT/$t.log"; then
    echo "!! $t: crash, see $OUT/$t.log and $OUT/crash-$t-*"; status=1
  fi
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+.*DONE)" "$OUT/$t.log" || tail -3 "$OUT/$t.log"
done
exit $status
