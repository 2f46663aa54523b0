#!/usr/bin/env bash
# Installs every Debian package Pipeforge needs to build, test and run its
# demo. Idempotent: when everything is present it only says so.
set -euo pipefail

packages=(
  build-essential cmake ccache pkg-config python3
  libfmt-dev nlohmann-json3-dev libcli11-dev
  libopenblas-dev
  libgloo-dev  # collectives and point-to-point between processes over TCP
  iproute2     # network namespaces: two "hosts" on one machine in the tests
  libhiredis-dev redis-server  # a Redis server as the rendezvous store (pipeforge launch --rdzv redis:)
  googletest libgtest-dev libbenchmark-dev
  llvm-14-tools
  clang-14 libclang-rt-14-dev  # the fuzzers (libFuzzer with AddressSanitizer)
  graphviz
  python3-torch python3-numpy
  libonnx-dev libprotobuf-dev python3-onnx  # pipeforge import: ONNX models, and the tests' exports from PyTorch
  pybind11-dev python3-dev python3-pytest  # the Python module and its tests
  libtcmalloc-minimal4  # bench/compare_torch.sh: PyTorch as fast as it gets here
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages are installed"
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "setup: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
