#!/usr/bin/env bash
# Everything before a run or a test: scripts/setup.sh (venv, libtorch), scripts/fetch-data.sh,
# scripts/fetch-faces.sh and scripts/fetch-models.sh, then the release build (after the data,
# so that build.rs sees the data tier at once and cargo test builds every suite).
# Usage: scripts/prepare.sh [--data-from DIR]   (DIR: local dataset mirror, e.g. ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_ARGS=()
if [ "${1:-}" = "--data-from" ]; then DATA_ARGS=(--from "${2:?--data-from needs a folder}"); fi

bash scripts/setup.sh --no-build
bash scripts/fetch-data.sh "${DATA_ARGS[@]}"
bash scripts/fetch-faces.sh
bash scripts/fetch-models.sh
bash scripts/setup.sh
