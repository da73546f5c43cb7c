#!/usr/bin/env bash
# README command 1: install everything, then run the embedded demo (local S3 server, mount, cp).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec "${PYTHON:-python3}" -m rangefs demo
