#!/usr/bin/env bash
# Installs the benchmark's peers (s3fs, rclone, fio, matplotlib) and runs it; writes
# docs/benchmarks.md and docs/benchmark.png. Extra arguments go to the script (e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --bench
exec "${PYTHON:-python3}" -m tests.benchmark.run_benchmark "$@"
