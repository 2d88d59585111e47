#!/usr/bin/env bash
# Builds the libFuzzer target of the RESP2 reply parser (fuzz/resp_fuzz.cpp) with clang,
# AddressSanitizer and UndefinedBehaviorSanitizer in build/fuzz, and runs it for SECONDS
# (default 30) on build/fuzz/corpus/resp: a copy of the seeds in fuzz/corpus/resp that
# keeps what earlier runs found. A crash leaves its input in build/fuzz/artifacts/ and
# makes the script exit non-zero; replay it with build/fuzz/fuzz/resp_fuzz FILE.
#
#   bash scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: bash scripts/fuzz.sh [SECONDS]   (a whole number of seconds above 0, default 30)" >&2
  exit 2
fi
for tool in clang clang++ cmake; do
  if ! command -v "$tool" >/dev/null; then
    echo "fuzz.sh: $tool not found: install the Debian packages clang libclang-rt-14-dev cmake" >&2
    exit 1
  fi
done

build=build/fuzz
# Tests and benchmarks stay out of this tree; the fuzz target is built by name, with only
# the libraries it links.
CC=clang CXX=clang++ cmake -S . -B "$build" -DRINGFEED_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRINGFEED_BUILD_TESTS=OFF -DRINGFEED_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --target resp_fuzz -j "$(nproc)"

corpus=$build/corpus/resp
artifacts=$build/artifacts/
mkdir -p "$corpus" "$artifacts"
cp fuzz/corpus/resp/* "$corpus"/
echo "=== resp_fuzz: ${seconds} s on $corpus"
"$build/fuzz/resp_fuzz" -max_total_time="$seconds" -artifact_prefix="$artifacts" "$corpus"
