#!/usr/bin/env bash
# The test command: installs dependencies, builds the release tree, the debug tree
# (AddressSanitizer + UndefinedBehaviorSanitizer) and the tsan tree (ThreadSanitizer), all
# with warnings as errors, and runs every test in each; then the fuzz targets for 20 s each
# (clang). RINGFEED_PRESETS overrides the list of trees (e.g. "release") and skips the
# fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

presets=${RINGFEED_PRESETS:-"release debug tsan"}
jobs=$(nproc)
for preset in $presets; do
  echo "=== $preset: configure and build"
  cmake --preset "$preset" -DRINGFEED_WERROR=ON >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
done
for preset in $presets; do
  echo "=== $preset: test"
  ctest --preset "$preset" --timeout 900
done
fuzzed=""
if [ -z "${RINGFEED_PRESETS:-}" ]; then
  # The fuzz targets, briefly (longer on demand: bash scripts/fuzz.sh SECONDS [TARGET]).
  echo "=== fuzz: every target in fuzz/, 20 s each"
  bash scripts/fuzz.sh 20
  fuzzed=", and the fuzz targets for 20 s each"
fi
echo "=== all tests passed in: $presets$fuzzed"
