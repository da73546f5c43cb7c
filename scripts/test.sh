#!/usr/bin/env bash
# README command 2: install what is missing, lint, type-check, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PYTHON=${PYTHON:-python3}
$PYTHON -m ruff check src tests
$PYTHON -m ruff format --check src tests
$PYTHON -m mypy
exec $PYTHON -m pytest "$@"
