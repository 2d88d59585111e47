#!/usr/bin/env bash
# The test command: installs dependencies, builds the release tree and the debug tree
# (AddressSanitizer + UndefinedBehaviorSanitizer) with warnings as errors, and runs every
# test in both. RINGFEED_PRESETS overrides the list (e.g. "release debug tsan").
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

presets=${RINGFEED_PRESETS:-"release debug"}
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
echo "=== all tests passed in: $presets"
