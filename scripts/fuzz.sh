#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer in build/fuzz, and runs each for SECONDS (default 30):
#
#   resp            the RESP2 reply parser (fuzz/resp_fuzz.cpp)
#   framed_record   the local log's record decoders and the file: source's batch decoding
#   segment_attach  attaching to ring and group segments of arbitrary bytes
#   lease           a hostile consumer writing its shared group's lease and cursor fields
#                   while the writer's reaper runs and good consumers pop and ack
#   kafka           the Kafka decoders: response frames, API responses, the consumer group
#                   protocol, record batches and their compression codecs
#
# Each runs on build/fuzz/corpus/NAME: a copy of its seeds in fuzz/corpus/NAME that keeps
# what earlier runs found. An input that takes longer than 20 s counts as a hang. A crash
# or hang leaves its input in build/fuzz/artifacts/ (NAME-crash-..., NAME-timeout-...);
# every target runs even if one fails, and the script then exits non-zero naming them.
# Replay an input with build/fuzz/fuzz/NAME_fuzz FILE.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET]
#
# SECONDS is per target: `bash scripts/fuzz.sh 20` (what scripts/test.sh runs) takes about
# two minutes. With TARGET only that one runs, for longer on demand:
# `bash scripts/fuzz.sh 600 lease`.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(resp framed_record segment_attach lease kafka)
usage="usage: bash scripts/fuzz.sh [SECONDS] [TARGET]   (SECONDS: a whole number above 0, default 30; TARGET: one of ${targets[*]})"

seconds=30
only=""
for arg in "$@"; do
  if [[ $arg =~ ^[1-9][0-9]*$ ]]; then
    seconds=$arg
  elif [[ " ${targets[*]} " == *" $arg "* ]]; then
    only=$arg
  else
    echo "fuzz.sh: '$arg' is neither a number of seconds nor a target" >&2
    echo "$usage" >&2
    exit 2
  fi
done
if [ -n "$only" ]; then targets=("$only"); fi
for tool in clang clang++ cmake; do
  if ! command -v "$tool" >/dev/null; then
    echo "fuzz.sh: $tool not found: install the Debian packages clang libclang-rt-14-dev cmake" >&2
    exit 1
  fi
done

build=build/fuzz
# Tests and benchmarks stay out of this tree; the fuzz targets are built by name, with
# only the libraries they link.
CC=clang CXX=clang++ cmake -S . -B "$build" -DRINGFEED_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRINGFEED_BUILD_TESTS=OFF -DRINGFEED_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target "${targets[@]/%/_fuzz}"

# The shm targets name their segments ringfeed.fuzz-PID-*; a crashed run leaves them.
trap 'rm -f /dev/shm/ringfeed.fuzz-*' EXIT

artifacts=$build/artifacts
mkdir -p "$artifacts"
failed=()
for name in "${targets[@]}"; do
  corpus=$build/corpus/$name
  mkdir -p "$corpus"
  cp fuzz/corpus/"$name"/* "$corpus"/
  echo "=== ${name}_fuzz: ${seconds} s on $corpus"
  if ! "$build/fuzz/${name}_fuzz" -max_total_time="$seconds" -timeout=20 \
    -artifact_prefix="$artifacts/$name-" "$corpus"; then
    failed+=("$name")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failed: ${failed[*]} (inputs in $artifacts/)" >&2
  exit 1
fi
echo "fuzz.sh: ${targets[*]}: no crash, hang or failed check in ${seconds} s each"
