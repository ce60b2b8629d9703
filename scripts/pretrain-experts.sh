#!/usr/bin/env bash
# Regenerates the default experiment's two pretrained experts, experiments/checkpoints/{generalist,
# arithmetic}: writes the two arithmetic corpora, runs experiments/pretrain-experts.toml (the
# generalist; the arithmetic expert's stage 1) and experiments/pretrain-arithmetic-context.toml (its
# stage 2), both resumable (kill them and run this script again), then measures each expert's skill
# (experiments/expert-skill.toml) and prints both reports. Results: results/pretrain.db (pretraining) and results/colm.db (skill).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh release
colm=build/release/bin/colm
# Stage 1 text: facts in short sentences; stage 2 text: half of them after random common words.
"$colm" corpus arithmetic --sentences 300000 --seed 1 \
  --out results/corpus/arithmetic.txt --heldout results/corpus/arithmetic-heldout.jsonl
"$colm" corpus arithmetic --sentences 400000 --seed 1 --context-share 0.5 --bracket-share 0.3 \
  --out results/corpus/arithmetic-context.txt
"$colm" run experiments/pretrain-experts.toml
"$colm" run experiments/pretrain-arithmetic-context.toml
"$colm" run experiments/expert-skill.toml
"$colm" report results/pretrain.db --out results/pretrain-report
"$colm" report results/colm.db --experiment expert-skill --out results/expert-skill-report
cat results/pretrain-report/report.md results/expert-skill-report/report.md
