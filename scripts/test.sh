#!/usr/bin/env bash
# The whole test suite in one command: set up, fetch data and weights, then
# cargo fmt --check, cargo clippy -D warnings, and cargo test (release profile,
# sharing the build that setup.sh made).
# Usage: scripts/test.sh [--data-from DIR]   (DIR: local dataset mirror, e.g. ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."

PREPARE_ARGS=()
if [ "${1:-}" = "--data-from" ]; then PREPARE_ARGS=(--data-from "$2"); shift 2; fi
bash scripts/prepare.sh "${PREPARE_ARGS[@]}"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --release --all-targets -- -D warnings
echo "==> cargo test"
cargo test --release "$@"
