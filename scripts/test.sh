#!/usr/bin/env bash
# Sets up, builds and runs every test: the GoogleTest suites and the lit
# suite (ctest), then the parser tests and the broken-model corpus again under
# AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build.sh
(cd build && ctest --output-on-failure -j "$(nproc)")

echo "== sanitizers: parser tests and the broken-model corpus =="
PF_BUILD_DIR=build-asan PF_CMAKE_ARGS="-DPF_SANITIZE=ON -DPF_BUILD_BENCH=OFF" \
  scripts/build.sh --target ir_test pipeforge
build-asan/tests/ir/ir_test --gtest_brief=1
python3 tests/corpus/check_corpus.py build-asan/tools/pipeforge
