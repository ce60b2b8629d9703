#!/usr/bin/env bash
# CPU threads across processes: one fixed sweep (bench/threads_sweep.toml, 18 decoding runs) run four
# ways, each from an empty database, timed side by side in one run:
#   1. one process, default threads
#   2. two shard processes at once (--shard 0/2, 1/2), default threads
#   3. the same two shards with COLM_THREADS=1
#   4. one `colm run --jobs 2`
# Prints each wall time and its ratio to (1). Targets: (2)/(1) <= 1.1 (shards do not fight for the
# cores), (1)/(4) >= 1.6 (--jobs 2 uses both cores).
# usage: bash bench/bench_threads.sh [BUILD_DIR]   (default build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
colm="${1:-build/release}/bin/colm"
toml=bench/threads_sweep.toml
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
at() { echo "--set experiment.database=$work/$1.db --set experiment.artifacts_dir=$work/artifacts"; }
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }

echo "bench_threads: $(nproc) cores; sweep $toml"
"$colm" --log-level warn run "$toml" $(at warmup) --set sweep.max_examples=2 >/dev/null  # page cache, plugins

t0=$(now); "$colm" --log-level warn run "$toml" $(at one) >/dev/null; one=$(elapsed "$t0")

t0=$(now)
"$colm" --log-level warn run "$toml" $(at two) --shard 0/2 >/dev/null &
"$colm" --log-level warn run "$toml" $(at two) --shard 1/2 >/dev/null &
wait; two=$(elapsed "$t0")

t0=$(now)
COLM_THREADS=1 "$colm" --log-level warn run "$toml" $(at two1) --shard 0/2 >/dev/null &
COLM_THREADS=1 "$colm" --log-level warn run "$toml" $(at two1) --shard 1/2 >/dev/null &
wait; two1=$(elapsed "$t0")

t0=$(now); "$colm" --log-level warn run "$toml" $(at jobs) --jobs 2 >/dev/null; jobs=$(elapsed "$t0")

ratio() { echo "scale=2; $1 / $2" | bc; }
printf '1. one process, default threads:           %7.1f s  (1.00)\n' "$one"
printf '2. two shards at once, default threads:    %7.1f s  (%s of 1)\n' "$two" "$(ratio "$two" "$one")"
printf '3. two shards at once, COLM_THREADS=1:     %7.1f s  (%s of 1)\n' "$two1" "$(ratio "$two1" "$one")"
printf '4. --jobs 2:                               %7.1f s  (%s of 1)\n' "$jobs" "$(ratio "$jobs" "$one")"
met() { if [ "$(echo "$1" | bc)" = 1 ]; then echo met; else echo NOT met; fi; }
echo "(a) two shards / one process = $(ratio "$two" "$one") (target <= 1.1: $(met "$two <= 1.1 * $one"))"
echo "(b) one process / --jobs 2 = $(ratio "$one" "$jobs") (target >= 1.6: $(met "$one >= 1.6 * $jobs"))"
