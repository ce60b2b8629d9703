#!/usr/bin/env bash
# The run command of the README: installs what is missing, builds, runs experiments/default.toml
# (resumable: rerunning skips finished work) and writes the report to results/report/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh release
bin=build/release/bin/colm
"$bin" run experiments/default.toml "$@"
"$bin" report results/colm.db --experiment default --out results/report
echo "[run-default] results: results/colm.db; report: results/report/report.html and report.md"
