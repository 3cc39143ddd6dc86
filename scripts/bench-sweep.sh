#!/usr/bin/env bash
# Throughput of `finetune sweep` on this CPU: the same sweep of 4 short runs
# (EfficientNet-Lite0 feature extraction on 8 ants/bees images per class and
# split, 2 learning rates x 2 seeds) with --jobs 1 and with --jobs 2, in
# alternating rounds. Prints runs per hour, whether both gave the same metrics,
# and how busy the machine was with other work during each measurement (from
# /proc/stat, less this sweep's own CPU time).
# Usage: scripts/bench-sweep.sh [--rounds R] [--epochs E]   (default: 2 rounds, 3 epochs)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=2; EPOCHS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "bench-sweep.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x target/release/finetune ] || bash scripts/setup.sh
FINETUNE=$(pwd)/target/release/finetune
DIR=$(pwd)/runs/bench-sweep
mkdir -p "$DIR"
DATA=$DIR/data
if [ ! -d "$DATA/val/bees" ]; then
  for split in train val; do
    for class in ants bees; do
      mkdir -p "$DATA/$split/$class"
      find "$(pwd)/data/hymenoptera_data/$split/$class" -name '*.jpg' | sort | head -8 \
        | while read -r f; do ln -sf "$f" "$DATA/$split/$class/"; done
    done
  done
fi
cat >"$DIR/sweep.toml" <<EOF
[base]
data = "$DATA"
arch = "efficientnet-lite0"
mode = "feature-extract"
cache-features = true
image-size = 160
epochs = $EPOCHS

[grid]
lr = [0.01, 0.001]
seed = [0, 1]
EOF

# Idle and total jiffies of all CPUs.
cpu_ticks() { awk '/^cpu /{idle=$5+$6; t=0; for(i=2;i<=NF;i++) t+=$i; print idle, t}' /proc/stat; }

RESULTS=$DIR/results.txt; : >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  for jobs in 1 2; do
    out=$DIR/jobs$jobs
    rm -rf "$out"
    read -r idle0 total0 < <(cpu_ticks)
    start=$(date +%s%N)
    /usr/bin/time -f "%U %S" -o "$DIR/cpu.txt" \
      "$FINETUNE" sweep "$DIR/sweep.toml" --out "$out" --devices cpu --jobs "$jobs" >"$DIR/last.log"
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    read -r idle1 total1 < <(cpu_ticks)
    read -r user sys <"$DIR/cpu.txt"
    # Share of all CPU time that other processes used while the sweep ran.
    others=$(awk -v i=$((idle1 - idle0)) -v t=$((total1 - total0)) -v u="$user" -v s="$sys" -v hz="$(getconf CLK_TCK)" \
      'BEGIN { busy = (t - i) / t; ours = (u + s) * hz / t; o = busy - ours; if (o < 0) o = 0; printf "%.0f", 100 * o }')
    load=$(cut -d' ' -f1 /proc/loadavg)
    perhour=$(awk -v ms="$ms" 'BEGIN { printf "%.0f", 4 * 3600000 / ms }')
    accs=$(python3 -c "import json,sys; print(' '.join('%.4f' % json.load(open('$out/' + d + '/summary.json'))['best_val_acc'] for d in sys.argv[1:]))" \
      'lr=0.01,seed=0' 'lr=0.01,seed=1' 'lr=0.001,seed=0' 'lr=0.001,seed=1')
    echo "round $round --jobs $jobs: $((ms / 1000)).$(printf %03d $((ms % 1000))) s for 4 runs = $perhour runs/hour | other work used ${others}% of the CPUs, load $load | best val acc $accs" | tee -a "$RESULTS"
  done
  # Same results: every metric of every epoch (timings aside) equal between the two.
  same=yes
  for point in "$DIR"/jobs1/*/metrics.csv; do
    name=$(basename "$(dirname "$point")")
    cmp -s <(cut -d, -f1-5 "$point") <(cut -d, -f1-5 "$DIR/jobs2/$name/metrics.csv") || same="no ($name differs)"
  done
  echo "round $round: same metrics with --jobs 1 and --jobs 2: $same" | tee -a "$RESULTS"
done
echo "results in $RESULTS"
