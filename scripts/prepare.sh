#!/usr/bin/env bash
# Everything before a run or a test: scripts/setup.sh (venv, libtorch, release build),
# scripts/fetch-data.sh, scripts/fetch-faces.sh and scripts/fetch-models.sh.
# Usage: scripts/prepare.sh [--data-from DIR]   (DIR: local dataset mirror, e.g. ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_ARGS=()
if [ "${1:-}" = "--data-from" ]; then DATA_ARGS=(--from "${2:?--data-from needs a folder}"); fi

bash scripts/setup.sh
bash scripts/fetch-data.sh "${DATA_ARGS[@]}"
bash scripts/fetch-faces.sh
bash scripts/fetch-models.sh
