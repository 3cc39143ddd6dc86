#!/usr/bin/env bash
# Reads many corrupted variants of real checkpoints (the Lite0 legacy file and
# torchvision-written zip/legacy checkpoints) with the .pth reader, each in a
# child process, and prints the counts: per file and per kind of mutation, OK
# and error results, panics and crashed children, peak memory, the most common
# errors. CI runs the same test with 10,000 variants.
# Usage: scripts/pth-mutate.sh [COUNT [JOBS]]   (default 100000 variants, one child per core up to 4)
# Needs what the tests need: .venv (torch, torchvision), libtorch, models/ (scripts/setup.sh, fetch-models.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH="${LIBTORCH:-$PWD/libtorch}"
export PTH_MUTATIONS="${1:-100000}"
if [ -n "${2:-}" ]; then export PTH_MUTATION_JOBS="$2"; fi
exec cargo test --release --test pth_mutation -- --exact mutations --nocapture
