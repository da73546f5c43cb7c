#!/usr/bin/env bash
# Installs everything rangefs, its tests and its benchmark need on Debian (run as root).
# Idempotent: packages already present are not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(fuse3 libfuse3-dev pkg-config gcc python3-dev rsync attr curl util-linux
              systemd ffmpeg psmisc)
PIP_EXTRAS=test
if [ "${1:-}" = "--bench" ]; then  # the peers and tools the benchmark compares against
    APT_PACKAGES+=(s3fs fio)
    PIP_EXTRAS=test,bench
fi
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "install: apt packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
echo "install: rangefs and its test dependencies into $($PYTHON -c 'import sys; print(sys.prefix)')"
$PYTHON -m pip install -q --disable-pip-version-check -e ".[$PIP_EXTRAS]" 2>&1 | grep -v "Running pip as the 'root'" || true
$PYTHON -c 'import pyfuse3, trio, boto3, diskcache' # fails loudly if the install did not work
if [ -x scripts/install-mount-helper.sh ] || [ -f scripts/install-mount-helper.sh ]; then
    bash scripts/install-mount-helper.sh
fi
