#!/usr/bin/env bash
# Configures and builds Pipeforge (Release, warnings as errors).
#   PF_BUILD_DIR   build folder (default: build)
#   PF_CMAKE_ARGS  extra configure options, e.g. "-DPF_SANITIZE=ON"
# Arguments go to `cmake --build`, e.g. scripts/build.sh --target pipeforge.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${PF_BUILD_DIR:-build}
# Let ccache share results between checkouts in different folders.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DPF_WERROR=ON ${PF_CMAKE_ARGS:-} >/dev/null
cmake --build "$build_dir" -j "$(nproc)" "$@"
