#!/usr/bin/env bash
# GPU smoke test of the CUDA build (the `cuda` preset; see the README, "CUDA"): the tests that can use
# a device (tests/test_device.cpp with COLM_TEST_DEVICE), a generation and a tiny experiment on the
# device, then a decode benchmark in float32 and bfloat16 with peak device memory (bench_device).
# Fails with a message and a non-zero exit when there is no GPU or the build cannot use one.
# usage: scripts/gpu-smoke.sh [DEVICE]   (default cuda:0; BUILD=build/cuda overrides the build tree)
#        BENCH_ARGS="TOKENS D_MODEL LAYERS" (default "128 2048 16": a ~1B-parameter Llama shape)
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cuda:0}"
build="${BUILD:-build/cuda}"
fail() { echo "gpu-smoke: $*" >&2; exit 1; }

command -v nvidia-smi >/dev/null 2>&1 ||
  fail "no GPU: nvidia-smi is not installed, so this machine has no NVIDIA driver. The CUDA path needs a GPU."
nvidia-smi -L >/dev/null 2>&1 || fail "no GPU: nvidia-smi finds no device ($(nvidia-smi -L 2>&1 | head -1))."
[ -x "$build/bin/colm" ] ||
  fail "no $build/bin/colm: build it first: Torch_DIR=/path/to/libtorch/share/cmake/Torch cmake --preset cuda && cmake --build --preset cuda"
for t in test_device bench_device; do
  [ -x "$build/bin/$t" ] || fail "no $build/bin/$t: build the tests and benchmarks (COLM_BUILD_TESTS, COLM_BUILD_BENCH)"
done
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader

# Can LibTorch reach the device? (a CPU-only LibTorch or a driver mismatch says no here)
out="$("$build/bin/colm" inspect tests/fixtures/models/gpt2-tiny --device "$device" 2>&1)" ||
  fail "LibTorch cannot use $device (torch::cuda::is_available() is false?):
$out"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "== tests on $device (COLM_TEST_DEVICE)"
COLM_TEST_DEVICE="$device" "$build/bin/test_device"

echo "== colm generate on $device in bfloat16: the default experiment's experts, Co-LLM's more_confident rule"
"$build/bin/colm" generate --base experiments/checkpoints/generalist --assistant experiments/checkpoints/arithmetic \
  --policy more_confident --device "$device" --dtype bfloat16 --max-tokens 40 \
  --prompt 'Tom has 12 apples and buys 30 more. How many apples does he have?'

echo "== experiments/tiny-rules.toml on $device"
"$build/bin/colm" run experiments/tiny-rules.toml --set "experiment.device=\"$device\"" \
  --set "experiment.database=\"$tmp/colm.db\"" --set "experiment.artifacts_dir=\"$tmp/artifacts\"" 2>&1 | tail -3

echo "== decode benchmark on $device: float32 vs bfloat16, peak device memory"
# shellcheck disable=SC2086
"$build/bin/bench_device" "$device" ${BENCH_ARGS:-128 2048 16}
echo "gpu-smoke: passed on $device"
