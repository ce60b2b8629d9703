#!/usr/bin/env bash
# Kill-and-resume check of `colm run`: runs a small experiment once uninterrupted, then again in a
# fresh database while killing it with SIGKILL at >= N random moments (rerunning after each kill),
# and checks that the final database holds the same runs, metrics and examples as the uninterrupted
# one and that `PRAGMA integrity_check` is ok. Exits non-zero on any difference.
#
#   scripts/kill-resume-check.sh [--colm PATH] [--kills N] [--seed S] [--keep] [EXPERIMENT.toml] [--set k=v ...]
#
# Defaults: build/release/bin/colm, 5 kills, seed from the clock (printed, so a failure can be
# replayed), experiments/tiny-rules.toml. Needs bash 5, bc and the sqlite3 CLI. Database and
# artifacts go to a temporary directory (removed unless --keep).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
colm="${COLM:-$here/build/release/bin/colm}"
kills=5
seed=""
keep=0
experiment="$here/experiments/tiny-rules.toml"
sets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --colm) colm="$2"; shift 2 ;;
    --kills) kills="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n "2,11p" "$0"; exit 0 ;;
    -*) echo "kill-resume-check: unknown option $1" >&2; exit 2 ;;
    *) experiment="$1"; shift ;;
  esac
done
[[ -x "$colm" ]] || { echo "kill-resume-check: no colm binary at $colm (build it, or pass --colm)" >&2; exit 2; }
[[ -f "$experiment" ]] || { echo "kill-resume-check: no experiment file $experiment" >&2; exit 2; }
command -v sqlite3 >/dev/null || { echo "kill-resume-check: needs the sqlite3 CLI" >&2; exit 2; }
command -v bc >/dev/null || { echo "kill-resume-check: needs bc" >&2; exit 2; }
[[ -n "${EPOCHREALTIME:-}" ]] || { echo "kill-resume-check: needs bash >= 5 (EPOCHREALTIME)" >&2; exit 2; }
[[ "$kills" =~ ^[0-9]+$ && "$kills" -ge 1 ]] || { echo "kill-resume-check: --kills needs a positive integer" >&2; exit 2; }
[[ -n "$seed" ]] || seed=$(( $(date +%s) % 32768 ))
RANDOM=$seed

work="$(mktemp -d "${TMPDIR:-/tmp}/colm-kill-resume.XXXXXX")"
cleanup() { if [[ $keep -eq 0 ]]; then rm -rf "$work"; else echo "kill-resume-check: kept $work"; fi; }
trap cleanup EXIT
# Both runs use the same number of Torch threads, so their numbers can be compared bit for bit.
export COLM_THREADS="${COLM_THREADS:-2}"

# colm run with this run's database and artifacts. `exec` makes the process colm itself, so that
# $! of `run_colm ... &` is colm's pid and SIGKILL reaches colm, not a wrapping shell.
run_colm() {  # DIR
  local dir="$1"
  exec "$colm" --log-level warn run "$experiment" "${sets[@]}" \
    --set "experiment.database=\"$dir/results.db\"" --set "experiment.artifacts_dir=\"$dir/artifacts\""
}

now() { date +%s.%N; }

echo "kill-resume-check: experiment $experiment, $kills kills, seed $seed, work dir $work"
mkdir -p "$work/reference" "$work/killed"

t0=$(now)
(run_colm "$work/reference") > "$work/reference.log" 2>&1 || { cat "$work/reference.log"; echo "kill-resume-check: the uninterrupted run failed" >&2; exit 1; }
full=$(echo "$(now) - $t0" | bc -l)
printf 'kill-resume-check: uninterrupted run took %.1f s\n' "$full"

# Progress = stored examples + artifacts (calibration points): what a kill can lose or keep.
progress() {  # DB
  [[ -f "$1" ]] || { echo 0; return; }
  sqlite3 "$1" "SELECT (SELECT count(*) FROM examples) + (SELECT count(*) FROM artifacts)" 2>/dev/null || echo 0
}
total=$(progress "$work/reference/results.db")

# Kill moments, alternating two kinds: odd kills at a random time in [0.2 s, full/kills] after the
# (re)start (often during start-up or the first batch), even kills once the stored progress reaches a
# random point between the current progress and a share 1/(kills left + 1) of what remains (mid-run,
# between any two writes). Time-based kills are capped by that share too, so however the machine's
# load changes, the killed runs never finish the experiment and every kill lands while colm works.
usec() { echo "${EPOCHREALTIME/./}"; }
span_us=$(echo "$full * 1000000 / $kills" | bc)
done_kills=0
attempts=0
while [[ $done_kills -lt $kills ]]; do
  attempts=$((attempts + 1))
  before=$(progress "$work/killed/results.db")
  if [[ $attempts -gt $((kills * 3)) || $before -ge $total ]]; then
    echo "kill-resume-check: only $done_kills of $kills kills landed before colm finished; use a larger experiment" >&2
    exit 1
  fi
  share=$(( (total - before) / (kills - done_kills + 1) ))
  (( share >= 1 )) || share=1
  if (( done_kills % 2 == 0 )); then
    deadline_us=$(( 200000 + (span_us > 200000 ? (span_us - 200000) * RANDOM / 32767 : 0) ))
    cap=$(( before + share ))
    what=$(printf 'at %.2f s' "$(echo "$deadline_us / 1000000" | bc -l)")
  else
    deadline_us=$(( 1 << 62 ))
    cap=$(( before + 1 + RANDOM % share ))
    what="at progress >= $cap of $total"
  fi
  start_us=$(usec)
  (run_colm "$work/killed") >> "$work/killed.log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null && (( $(usec) - start_us < deadline_us )) &&
        (( $(progress "$work/killed/results.db") < cap )); do
    sleep 0.02
  done
  if kill -KILL "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
    done_kills=$((done_kills + 1))
    elapsed=$(echo "($(usec) - $start_us) / 1000000" | bc -l)
    printf 'kill-resume-check: kill %d %s: after %.2f s, progress %s -> %s of %s\n' "$done_kills" "$what" "$elapsed" \
      "$before" "$(progress "$work/killed/results.db")" "$total"
  else
    wait "$pid" || { cat "$work/killed.log"; echo "kill-resume-check: colm failed" >&2; exit 1; }
    echo "kill-resume-check: colm finished before the kill $what; not counted"
  fi
done
(run_colm "$work/killed") >> "$work/killed.log" 2>&1 || { cat "$work/killed.log"; echo "kill-resume-check: the final rerun failed" >&2; exit 1; }

# What must be equal: runs by content key (status and labels), metrics with intervals, every
# example's output and metrics, every token. Row ids, timings and latencies may differ.
dump() {  # DB
  sqlite3 "$1" <<'SQL'
.mode list
SELECT 'run', content_key, status, policy, quote(threshold), strategy, split, seed FROM runs ORDER BY content_key;
SELECT 'metric', r.content_key, m.name, printf('%.17g', m.value), printf('%.17g', m.ci_low), printf('%.17g', m.ci_high)
  FROM metrics m JOIN runs r ON r.id = m.run_id ORDER BY r.content_key, m.name;
SELECT 'example', r.content_key, e.example_id, e.idx, hex(e.output), e.metrics, e.n_tokens, e.n_deferred
  FROM examples e JOIN runs r ON r.id = e.run_id ORDER BY r.content_key, e.idx;
SELECT 'tokens', r.content_key, count(*), sum(t.token_id), sum(t.source), group_concat(t.probs, ';')
  FROM tokens t JOIN runs r ON r.id = t.run_id GROUP BY r.content_key ORDER BY r.content_key;
SELECT 'calibration', policy, strategy, split, threshold, metric, printf('%.17g', value), chosen FROM calibration
  ORDER BY policy, strategy, split, threshold, metric;
SQL
}
dump "$work/reference/results.db" > "$work/reference.txt"
dump "$work/killed/results.db" > "$work/killed.txt"

status=0
for db in reference killed; do
  ic=$(sqlite3 "$work/$db/results.db" "PRAGMA integrity_check")
  if [[ "$ic" != "ok" ]]; then echo "kill-resume-check: $db database integrity_check: $ic" >&2; status=1; fi
done
unfinished=$(sqlite3 "$work/killed/results.db" "SELECT count(*) FROM runs WHERE status != 'done'")
if [[ "$unfinished" != "0" ]]; then echo "kill-resume-check: $unfinished runs are not done after the final rerun" >&2; status=1; fi
runs=$(grep -c '^run|' "$work/reference.txt" || true)
if [[ "$runs" == "0" ]]; then echo "kill-resume-check: the reference database has no runs" >&2; status=1; fi
if ! diff -q "$work/reference.txt" "$work/killed.txt" > /dev/null; then
  echo "kill-resume-check: the killed-and-resumed database differs from the uninterrupted one:" >&2
  diff "$work/reference.txt" "$work/killed.txt" | cut -c1-300 | head -40 >&2
  status=1
fi
if [[ $status -eq 0 ]]; then
  echo "kill-resume-check: ok: $done_kills kills, $runs runs with identical metrics, examples and tokens; integrity_check ok"
else
  keep=1
fi
exit $status
