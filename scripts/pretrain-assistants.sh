#!/usr/bin/env bash
# Regenerates the two-assistant experiment's assistants, experiments/checkpoints/{adder,subtractor}:
# writes one corpus of addition facts and one of subtraction facts (generic context before half of
# the sentences, 30% of the facts in brackets), trains each from the default experiment's
# arithmetic expert on its own corpus (experiments/pretrain-assistants.toml, two processes, resumable:
# kill it and run this script again), then measures every model alone on held-out addition and
# subtraction facts (experiments/skill-addition.toml, skill-subtraction.toml) and prints the reports.
# About 15 minutes on 2 cores. Results: results/pretrain.db (training runs), results/skill.db (skill).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh release
colm=build/release/bin/colm
"$colm" corpus arithmetic --operations + --sentences 200000 --seed 3 --context-share 0.5 --bracket-share 0.3 \
  --out results/corpus/addition.txt --heldout results/corpus/addition-heldout.jsonl
"$colm" corpus arithmetic --operations - --sentences 200000 --seed 4 --context-share 0.5 --bracket-share 0.3 \
  --out results/corpus/subtraction.txt --heldout results/corpus/subtraction-heldout.jsonl
"$colm" run experiments/pretrain-assistants.toml --jobs 2
for skill in addition subtraction; do
  "$colm" run "experiments/skill-$skill.toml"
  "$colm" report results/skill.db --experiment "skill-$skill" --out "results/skill-$skill-report"
  cat "results/skill-$skill-report/report.md"
done
