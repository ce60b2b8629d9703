#!/usr/bin/env bash
# The test command of the README: installs what is missing, builds, runs every test with CTest.
# usage: scripts/test.sh [release|debug|asan]   (default: release)
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
bash scripts/setup.sh --with-browser
bash scripts/build.sh "$preset"
jobs="$(nproc 2>/dev/null || echo 2)"
ctest --preset "$preset" -j "$jobs"
