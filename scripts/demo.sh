#!/usr/bin/env bash
# The main job: installs dependencies, builds the release tree, and runs a writer with
# exclusive and broadcast workers attached, printing their latency percentiles.
# Extra arguments go to ringfeed-demo (see ringfeed-demo --help).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target ringfeed-demo
exec ./build/release/tools/ringfeed-demo "$@"
