#!/usr/bin/env bash
# The test command of the README: installs what is missing, builds, runs every test with CTest, and
# ends with how many tests were skipped and why (a test that cannot run prints "COLM-SKIP: reason",
# which CTest counts as skipped: tests/support.hpp). Exits non-zero when a test fails.
# usage: scripts/test.sh [release|debug|asan]   (default: release)
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
bash scripts/setup.sh --with-browser --with-slurm
bash scripts/build.sh "$preset"
jobs="$(nproc 2>/dev/null || echo 2)"
rc=0
ctest --preset "$preset" -j "$jobs" || rc=$?

# CTest's log of this run holds every test's output: find the skip markers and name their tests.
log="build/$preset/Testing/Temporary/LastTest.log"
echo
if [ -f "$log" ]; then
  awk '
    /^[0-9]+\/[0-9]+ Test: / { name = $0; sub(/^[0-9]+\/[0-9]+ Test: /, "", name) }
    /COLM-SKIP: / && !/^Skip regular expression/ && name != "" {
      reason = $0; sub(/.*COLM-SKIP: /, "", reason)
      if (!(name in seen)) { seen[name] = 1; n++; count[reason]++; tests[reason] = tests[reason] "\n    " name }
    }
    END {
      if (n == 0) { print "skipped: none"; exit }
      print "skipped: " n " test" (n == 1 ? "" : "s")
      for (r in count) print "  " count[r] " because " r ":" tests[r]
    }' "$log"
else
  echo "skipped: unknown ($log is missing)"
fi
exit "$rc"
