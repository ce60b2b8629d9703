#!/usr/bin/env bash
# Installs every Debian 12 package colm needs to build, test and run. Idempotent: runs
# `apt-get update` and `apt-get install` only when a package is missing.
set -euo pipefail

PACKAGES=(
  build-essential g++ cmake ninja-build pkg-config git
  libtorch-dev libgloo-dev libopenblas0-openmp
  libboost-dev libboost-program-options-dev libboost-filesystem-dev
  libtomlplusplus-dev libsqlitecpp-dev libsqlite3-dev sqlite3 bc
  libspdlog-dev libfmt-dev catch2 nlohmann-json3-dev libpcre2-dev libicu-dev
)
# Extra packages for optional parts: --with-browser (report test), --with-clang (fuzzer),
# --with-slurm (a single-node Slurm cluster for `colm submit --slurm`: scripts/slurm-local.sh)
for arg in "$@"; do
  case "$arg" in
    --with-browser) PACKAGES+=(chromium) ;;
    --with-clang) PACKAGES+=(clang libclang-rt-14-dev) ;;
    --with-slurm) PACKAGES+=(slurm-wlm munge) ;;
    --help|-h) echo "usage: scripts/setup.sh [--with-browser] [--with-clang] [--with-slurm]"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup.sh: this script needs Debian's apt-get and dpkg-query; install these packages by hand: ${PACKAGES[*]}" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "[setup] all ${#PACKAGES[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=sudo
  else
    echo "setup.sh: missing packages (${missing[*]}) and not running as root; rerun as root or with sudo" >&2
    exit 1
  fi
else
  SUDO=
fi

echo "[setup] installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "[setup] done"
