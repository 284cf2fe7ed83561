#!/usr/bin/env bash
# Prove the wheel installs and runs as a user gets it: build the wheel, install it NON-editable into
# a fresh virtual environment that reuses the dependencies already in $VENV (a path entry, not its
# .pth files, so the editable nopeek of the dev venv stays invisible), then run nopeek from a folder
# outside the repository: --version, a 1-epoch train, an attack, a sweep and a report.
set -euo pipefail
VENV=${1:-.venv}
repo=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$VENV/bin/python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/dist" .
"$VENV/bin/python" -m venv --without-pip "$work/venv"
deps=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" > "$site/_nopeek_deps.pth"
"$VENV/bin/python" -m pip --python "$work/venv/bin/python" install --quiet --no-deps \
    --no-index "$work"/dist/nopeek-*.whl

cd "$work"
export PATH="$work/venv/bin:$PATH" OMP_NUM_THREADS=1
where=$(python -c 'import nopeek, os; print(os.path.dirname(nopeek.__file__))')
case "$where" in "$repo"*) echo "wheel smoke: nopeek imported from the repository ($where)"; exit 1;; esac
nopeek --version
nopeek train --epochs 1 --record-samples 64 --dcor-samples 64 --out run --quiet
nopeek attack --run run --attack white-box:steps=20,inverse-network:steps=20 --n-samples 8
nopeek sweep --epochs 1 --alpha 0,1 --attack white-box:steps=20 --n-samples 8 --out sweep --quiet
nopeek report --sweep sweep --out report --quiet
test -s report/report.md && test -s report/report.html
echo "wheel smoke: installed from $where; train, attack, sweep and report ran outside the repository"
