#!/usr/bin/env bash
# The test command: installs dependencies, builds the release tree, the debug tree
# (AddressSanitizer + UndefinedBehaviorSanitizer) and the tsan tree (ThreadSanitizer), all
# with warnings as errors, and runs every test in each. RINGFEED_PRESETS overrides the
# list (e.g. "release").
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
echo "=== all tests passed in: $presets"
