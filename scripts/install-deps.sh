#!/usr/bin/env bash
# Installs what ringfeed needs to build and test on Debian 12 (run as root, or with
# sudo available). Does nothing when every package is already there.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libboost-dev          # Boost.Interprocess (header-only)
  liburing-dev          # io_uring
  libgtest-dev libgmock-dev
  libbenchmark-dev
  clang libclang-rt-14-dev  # libFuzzer (scripts/fuzz.sh)
  redis-server          # the real server the Redis Streams tests and bench run against
  libhiredis-dev        # hiredis: the direct-client baseline of ringfeed-bench redis
  gnuplot-nox           # bench/plot_latency.sh: percentile-distribution plots
  zlib1g-dev libsnappy-dev liblz4-dev libzstd-dev  # the codecs of compressed Kafka record batches
  librdkafka-dev        # the Kafka mock cluster the Kafka tests run against (rdkafka_mock.h)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  as_root=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
