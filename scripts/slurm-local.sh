#!/usr/bin/env bash
# A single-node Slurm cluster on this machine (Debian's slurm-wlm with munge),
# for trying `finetune sweep --slurm` end to end without a real cluster.
#
# Usage (as root):
#   scripts/slurm-local.sh start        install (apt-get) if needed, configure, start munged, slurmctld, slurmd
#   scripts/slurm-local.sh status       sinfo and squeue
#   scripts/slurm-local.sh stop         stop what start started (by its pid files)
#   scripts/slurm-local.sh run-sweep [FILE] [OUT]
#       start, write FILE's sweep.sbatch (default: a 4-point sweep on a tiny
#       ants/bees folder, CPU, EfficientNet-Lite0 from scripts/fetch-models.sh), sbatch it, wait for every task, check every
#       point is done, run `finetune report`, stop. Prints the measured times.
#   scripts/slurm-local.sh run-dist
#       start, sbatch a 2-task job whose `srun` runs one data-parallel finetune
#       (two ranks joined through Slurm's variables), then the two array jobs
#       `finetune sweep --slurm` writes for a sweep of nproc = [1, 2]
#       (sweep.sbatch: one task; sweep-nproc2.sbatch: 2 srun tasks, one rank
#       each); check the runs' world sizes, stop.
#
# Everything lives under target/slurm-local (config, state, logs, pid files);
# nothing is left running after stop or run-sweep.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=$(pwd)/target/slurm-local
CONF=$ROOT/etc/slurm.conf
HOST=$(hostname -s)
CPUS=$(nproc)
MUNGE_PID=$ROOT/run/munged.pid
export SLURM_CONF=$CONF

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "slurm-local: run as root (it installs packages and starts daemons)" >&2
    exit 1
  fi
}

install() {
  if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return; fi
  echo "==> apt-get install slurm-wlm munge"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

configure() {
  mkdir -p "$ROOT"/{etc,state,spool,log,run}
  # munge: a key, its folders owned by munge.
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  # No cgroup.conf: with one, slurmd 22.05 fails here ("cannot find cgroup plugin").
  cat >"$CONF" <<EOF
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
NodeName=$HOST CPUs=$CPUS RealMemory=4000 State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  need_root
  install
  configure
  if ! alive "$MUNGE_PID"; then
    munged --force --pid-file="$MUNGE_PID"
  fi
  munge -n | unmunge >/dev/null
  alive "$ROOT/run/slurmctld.pid" || slurmctld -f "$CONF"
  alive "$ROOT/run/slurmd.pid" || slurmd -f "$CONF"
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
      echo "slurm-local: node $HOST idle ($CPUS CPUs), partition local; SLURM_CONF=$CONF"
      return
    fi
    sleep 1
  done
  echo "slurm-local: the node did not come up; see $ROOT/log" >&2
  sinfo >&2 || true
  exit 1
}

stop_pid() {
  local file=$1 name=$2
  if alive "$file"; then
    local pid
    pid=$(cat "$file")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    echo "slurm-local: stopped $name (pid $pid)"
  fi
  rm -f "$file"
}

stop() {
  stop_pid "$ROOT/run/slurmd.pid" slurmd
  stop_pid "$ROOT/run/slurmctld.pid" slurmctld
  stop_pid "$MUNGE_PID" munged
}

status() {
  sinfo
  squeue
}

# A tiny ants/bees folder (4 images per class and split), linked from the data.
tiny_data() {
  local dir=$ROOT/tiny-ants-bees
  if [ ! -d "$dir/val/bees" ]; then
    for split in train val; do
      for class in ants bees; do
        mkdir -p "$dir/$split/$class"
        find "$(pwd)/data/hymenoptera_data/$split/$class" -name '*.jpg' | sort | head -4 \
          | while read -r f; do ln -sf "$f" "$dir/$split/$class/"; done
      done
    done
  fi
  echo "$dir"
}

run_sweep() {
  local file=${1:-} out=${2:-$ROOT/runs}
  mkdir -p "$ROOT"
  if [ -z "$file" ]; then
    file=$ROOT/sweep.toml
    cat >"$file" <<EOF
# 4 short CPU runs: 2 learning rates x 2 seeds on a tiny ants/bees folder.
[base]
data = "$(tiny_data)"
arch = "efficientnet-lite0"
mode = "feature-extract"
cache-features = true
image-size = 96
epochs = 3

[grid]
lr = [0.01, 0.001]
seed = [0, 1]
EOF
  fi
  cargo build --release --bin finetune -q
  local finetune
  finetune=$(pwd)/target/release/finetune
  trap stop EXIT
  start
  rm -rf "$out"
  "$finetune" sweep "$file" --out "$out" --slurm --cpus-per-task 1 --time 0:10:00 --jobs "$CPUS"
  local started
  started=$(date +%s%N)
  local job
  job=$(sbatch --parsable "$out/sweep.sbatch")
  echo "slurm-local: submitted array job $job"
  while squeue -h -j "$job" 2>/dev/null | grep -q .; do sleep 1; done
  local took_ms=$(( ($(date +%s%N) - started) / 1000000 ))
  echo "slurm-local: array job $job finished in $((took_ms / 1000)).$(printf %03d $((took_ms % 1000))) s; task logs:"
  ls "$out/slurm"
  "$finetune" sweep "$file" --out "$out" --list
  if "$finetune" sweep "$file" --out "$out" --list | tail -1 | grep -qvE '^[0-9]+ done$'; then
    echo "slurm-local: not every point is done" >&2
    exit 1
  fi
  "$finetune" report "$out"
}

# Waits for Slurm job $1 to leave the queue.
wait_for_job() {
  while squeue -h -j "$1" 2>/dev/null | grep -q .; do sleep 1; done
}

# summary.json in $1 says world_size $2, or the script fails.
check_world_size() {
  local world
  world=$(sed -n 's/.*"world_size": *\([0-9]*\).*/\1/p' "$1/summary.json" 2>/dev/null || true)
  if [ "$world" != "$2" ]; then
    echo "slurm-local: $1: expected a finished run of world size $2, found '${world:-no summary.json}'" >&2
    exit 1
  fi
}

run_dist() {
  local out=$ROOT/dist data finetune
  cargo build --release --bin finetune -q
  finetune=$(pwd)/target/release/finetune
  data=$(tiny_data)
  trap stop EXIT
  start
  rm -rf "$out" && mkdir -p "$out"
  local recipe="--data $data --arch efficientnet-lite0 --mode feature-extract --cache-features --image-size 96 --epochs 3 --batch-size 2"
  cat >"$out/dist.sbatch" <<EOF
#!/bin/bash
#SBATCH --job-name=tchlab-dist
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --time=0:10:00
#SBATCH --output=$out/slurm-%j.out
srun --kill-on-bad-exit=1 $finetune $recipe --threads 1 --dist-timeout 120 --out $out/run
EOF
  local job started took_ms
  started=$(date +%s%N)
  job=$(sbatch --parsable "$out/dist.sbatch")
  echo "slurm-local: submitted 2-task job $job (srun: one data-parallel run)"
  wait_for_job "$job"
  took_ms=$(( ($(date +%s%N) - started) / 1000000 ))
  cat "$out"/slurm-*.out
  check_world_size "$out/run" 2
  echo "slurm-local: the 2-task srun run finished in $((took_ms / 1000)) s"

  cat >"$out/sweep.toml" <<EOF
# Two points: one process (nproc = 1), and a data-parallel run of two ranks (nproc = 2).
[base]
data = "$data"
arch = "efficientnet-lite0"
mode = "feature-extract"
cache-features = true
image-size = 96
epochs = 3
batch-size = 2

[grid]
nproc = [1, 2]
EOF
  local sweep=$out/sweep jobs=()
  "$finetune" sweep "$out/sweep.toml" --out "$sweep" --slurm --cpus-per-task 1 --time 0:10:00
  grep -qx '#SBATCH --ntasks-per-node=2' "$sweep/sweep-nproc2.sbatch"
  grep -q '^exec srun --kill-on-bad-exit=1 ' "$sweep/sweep-nproc2.sbatch"
  grep -qx '#SBATCH --ntasks=1' "$sweep/sweep.sbatch"
  for script in sweep.sbatch sweep-nproc2.sbatch; do
    jobs+=("$(sbatch --parsable "$sweep/$script")")
    echo "slurm-local: submitted $script as array job ${jobs[-1]}"
  done
  for job in "${jobs[@]}"; do wait_for_job "$job"; done
  echo "slurm-local: the nproc = 2 point's task log:"
  cat "$sweep/slurm/${jobs[1]}_1.out"
  "$finetune" sweep "$out/sweep.toml" --out "$sweep" --list
  check_world_size "$sweep/nproc=1" 1
  check_world_size "$sweep/nproc=2" 2
  grep -q 'rank 1 joins rank 0' "$sweep/slurm/${jobs[1]}_1.out"
  if ! grep -q '"attempts": 1,' "$sweep/nproc=2/exit.json" || ! grep -q '"outcome": "done"' "$sweep/nproc=2/exit.json"; then
    echo "slurm-local: $sweep/nproc=2/exit.json: expected one attempt, done" >&2
    cat "$sweep/nproc=2/exit.json" >&2
    exit 1
  fi
  echo "slurm-local: the sweep's points finished: nproc=1 world_size 1, nproc=2 world_size 2 (srun, 2 tasks)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  run-sweep) need_root; shift; run_sweep "$@" ;;
  run-dist) need_root; run_dist ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
