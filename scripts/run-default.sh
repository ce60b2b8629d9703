#!/usr/bin/env bash
# The run command of the README: installs what is missing, builds, runs experiments/default.toml
# (resumable: rerunning skips finished work), measures each pretrained expert alone on held-out
# arithmetic facts (experiments/expert-skill.toml) and writes the report of both to results/report/.
# Extra arguments go to `colm run` of the default experiment (e.g. --dry-run, --set k=v).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh release
bin=build/release/bin/colm
start=$(date +%s)
# --jobs auto: one worker process per core for calibration and the sweep (small models: parallel runs
# gain far more than intra-op threads); results equal a single process's.
"$bin" run experiments/default.toml --jobs auto "$@"
case " $* " in *" --dry-run "*) exit 0 ;; esac
# The held-out facts are generated (1 s), not stored: the same options always give the same file.
[ -f results/corpus/arithmetic-heldout.jsonl ] ||
  "$bin" corpus arithmetic --sentences 300000 --seed 1 \
    --out results/corpus/arithmetic.txt --heldout results/corpus/arithmetic-heldout.jsonl
"$bin" run experiments/expert-skill.toml --jobs auto
"$bin" report results/colm.db --out results/report
echo "[run-default] $(( $(date +%s) - start )) s; results: results/colm.db; report: results/report/report.html and report.md"
