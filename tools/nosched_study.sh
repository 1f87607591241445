#!/usr/bin/env bash
# The 2.6+ study: does the class-conditioned flow model need its ExponentialLR
# scheduler, and what compensates without it? Trains one model per learning-rate
# schedule side by side (same seed, data, epochs and batch), then scores each
# with scripts/eval.lua (classifier accuracy at CFG 5, Fréchet distance).
#
# Sized by a time budget rather than fixed numbers, so that it fits a machine
# lent for minutes: a short calibration run (all configs at once, as in the
# study) measures images/s, and the training subset and the number of scored
# samples follow from TRAIN_S and EVAL_S.
#
#   tools/nosched_study.sh OUTDIR
#   env: FDM (default build/fdm), THREADS per run (default 3), EPOCHS (10),
#        HIDDEN (64), SEED (0), TRAIN_S (250), EVAL_S (170), EVAL_STEPS (100),
#        SUBSET and EVAL_N (the sizes; giving both skips the calibration),
#        CONFIGS ("sched:1e-2 const:1e-2 const:3e-3 const:1e-3 const:3e-4")
set -u
OUTDIR=${1:?usage: tools/nosched_study.sh OUTDIR}
FDM=${FDM:-build/fdm}
THREADS=${THREADS:-3}
EPOCHS=${EPOCHS:-10}
TRAIN_S=${TRAIN_S:-250}
EVAL_S=${EVAL_S:-170}
EVAL_STEPS=${EVAL_STEPS:-100}
HIDDEN=${HIDDEN:-64}
SEED=${SEED:-0}
CONFIGS=${CONFIGS:-"sched:1e-2 const:1e-2 const:3e-3 const:1e-3 const:3e-4"}
mkdir -p "$OUTDIR"
export OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=passive
log() { echo "[$(date +%T)] $*" | tee -a "$OUTDIR/study.log"; }
log "fdm $($FDM -v 2>&1 | head -1); $(nproc --all) cores; $THREADS threads per run; configs: $CONFIGS"

# --- calibration: every config's process at once, a few batches each
if [ -z "${SUBSET:-}" ] || [ -z "${EVAL_N:-}" ]; then
rates=()
n=0
for c in $CONFIGS; do
  n=$((n + 1))
  "$FDM" scripts/flow_class.lua --subset 1280 --epochs 1 --max-batches 10 --stop-after 1 --hidden "$HIDDEN" \
    --sample-epochs 99 --out "$OUTDIR/cal$n" >"$OUTDIR/cal$n.log" 2>&1 &
done
wait
for k in $(seq 1 $n); do
  r=$(tr '\r' '\n' <"$OUTDIR/cal$k.log" | grep -o '([0-9.]* images/s' | grep -o '[0-9.]*' | head -1)
  [ -n "$r" ] || { log "calibration run $k failed:"; tail -5 "$OUTDIR/cal$k.log" | tee -a "$OUTDIR/study.log"; exit 1; }
  rates+=("$r")
done
rate=$(printf '%s\n' "${rates[@]}" | sort -g | head -1)   # the slowest, to stay inside the budget
SUBSET=${SUBSET:-$(awk -v r="$rate" -v t="$TRAIN_S" -v e="$EPOCHS" 'BEGIN { s = int(r * t / e / 64) * 64; print (s < 640 ? 640 : s) }')}
# eval forward runs ~3x the training rate; CFG doubles the passes per step
EVAL_N=${EVAL_N:-$(awk -v r="$rate" -v t="$EVAL_S" -v s="$EVAL_STEPS" 'BEGIN { n = int(3 * r * t / (2 * s) / 10) * 10; print (n < 100 ? 100 : (n > 2000 ? 2000 : n)) }')}
log "calibration: ${rates[*]} images/s per run"
rm -rf "$OUTDIR"/cal*
fi
log "subset $SUBSET x $EPOCHS epochs, D $HIDDEN, seed $SEED; eval $EVAL_N samples x $EVAL_STEPS steps"

# --- train and score every config, all at once
run_config() {
  local c=$1 kind=${1%%:*} lr=${1#*:} dir="$OUTDIR/${1/:/_}"
  local extra=""
  [ "$kind" = const ] && extra="--no-scheduler"
  local t0=$SECONDS
  "$FDM" scripts/flow_class.lua --subset "$SUBSET" --epochs "$EPOCHS" --lr "$lr" $extra \
    --hidden "$HIDDEN" --seed "$SEED" \
    --steps "$EVAL_STEPS" --sample-epochs "$EPOCHS" --out "$dir" >"$dir.train.log" 2>&1 || { echo "train failed" >"$dir.failed"; return; }
  echo $((SECONDS - t0)) >"$dir.train_s"
  "$FDM" scripts/eval.lua --model "$dir/model.safetensors" --n "$EVAL_N" --steps "$EVAL_STEPS" \
    --out "$dir/eval.png" --json "$dir/eval.json" >"$dir.eval.log" 2>&1 || echo "eval failed" >"$dir.failed"
}
for c in $CONFIGS; do run_config "$c" & done
wait

# --- the table
{
  echo "| schedule | lr | final epoch loss | train s | accuracy | FD | FD floor |"
  echo "|---|---|---|---|---|---|---|"
  for c in $CONFIGS; do
    d="$OUTDIR/${c/:/_}"
    if [ -e "$d.failed" ]; then echo "| ${c%%:*} | ${c#*:} | $(cat "$d.failed") | | | | |"; continue; fi
    loss=$(tr '\r' '\n' <"$d.train.log" | grep -o 'mean loss [0-9.]*' | tail -1 | awk '{print $3}')
    acc=$(grep -o '"accuracy": [0-9.]*' "$d/eval.json" | head -1 | awk '{printf "%.2f%%", 100 * $2}')
    fd=$(grep -o '"frechet": [0-9.]*' "$d/eval.json" | awk '{print $2}')
    floor=$(grep -o '"frechet_floor": [0-9.]*' "$d/eval.json" | awk '{print $2}')
    echo "| ${c%%:*} | ${c#*:} | $loss | $(cat "$d.train_s") | $acc | $fd | $floor |"
  done
} | tee "$OUTDIR/summary.md" | tee -a "$OUTDIR/study.log"
