#!/usr/bin/env bash
# Sets up, builds and runs every test: the GoogleTest suites, the lit suite,
# the broken-model corpus and the PyTorch reference (ctest), then the parser
# tests and the corpus again under AddressSanitizer + UndefinedBehaviorSanitizer,
# the threaded runtime under ThreadSanitizer, then every file reader under
# libFuzzer for a bounded time (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build.sh
(cd build && ctest --output-on-failure -j "$(nproc)")
# Each stage's header says how far into the run it starts (CI has 30 minutes).
stage() { echo "== [${SECONDS} s] $* =="; }

stage "sanitizers: parser tests and the broken-model corpus"
# Only the IR and the passes are built again: the corpus runs in process here
# (tests/passes/corpus_test.cpp); ctest above ran it through the command.
PF_BUILD_DIR=build-asan PF_CMAKE_ARGS="-DPF_SANITIZE=ON -DPF_BUILD_BENCH=OFF -DPF_CUDA=OFF" \
  scripts/build.sh --target ir_test corpus_test
build-asan/tests/ir/ir_test --gtest_brief=1
build-asan/tests/passes/corpus_test --gtest_brief=1

stage "thread sanitizer: the communicators, the runtime (checkpoints, watchdog, failures), the pipelines, the data-set prefetcher"
# Without -Werror: GCC 12 warns falsely (free-nonheap-object) in std::vector
# code under -fsanitize=thread.
PF_BUILD_DIR=build-tsan PF_CMAKE_ARGS="-DPF_TSAN=ON -DPF_WERROR=OFF -DPF_BUILD_BENCH=OFF -DPF_CUDA=OFF -DPF_PYTHON=OFF" \
  scripts/build.sh --target communicator_test gloo_communicator_test runtime_test pipeline_test sample_dataset_test >/dev/null
# The pipelines' threads meet in the runtime, whatever the model: the
# equivalence suite runs under TSan on the MLP, the GPT and the tables model
# (the Llama-style and mixture-of-experts models add ops, not threads).
for t in comm/communicator_test comm/gloo_communicator_test runtime/runtime_test runtime/pipeline_test runtime/sample_dataset_test; do
  TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/tests/tsan.supp" build-tsan/tests/$t --gtest_brief=1 \
    --gtest_filter='-Models/Equivalence.*/llama:Models/Equivalence.*/moe:MixtureOfExperts.*'
done

stage "fuzzers: the IR, plan, safetensors, profile, cluster and schedule readers, 30 s each"
scripts/fuzz.sh 30
stage "done"
