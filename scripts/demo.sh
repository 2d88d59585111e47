#!/usr/bin/env bash
# The main job, with the real command line: installs dependencies, builds `ringfeed`
# (release preset), fills a local log with `produce`, starts the fetcher on it,
# attaches workers in exclusive, shared (two processes) and broadcast mode, produces at
# a steady rate while they are attached, waits until every group has consumed
# everything, stops the workers and the fetcher with SIGTERM, checks that no segment is
# left, and prints each worker's publish-to-consume latency percentiles.
#
#   bash scripts/demo.sh [--initial N] [--messages N] [--rate MSGS_PER_S] [--size BYTES]
#
# Exit 0 when every check passed; otherwise non-zero with the reason on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

initial=10000   # messages in the log before the fetcher starts (the backlog)
messages=20000  # messages produced at --rate while the workers are attached
rate=10000      # messages per second
size=64         # bytes per message value

usage() {
  sed -n '2,11s/^# \{0,1\}//p' "$0"
  echo "Defaults: --initial $initial --messages $messages --rate $rate --size $size"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --initial | --messages | --rate | --size)
      if [ $# -lt 2 ] || ! [[ "$2" =~ ^[0-9]{1,9}$ ]]; then
        echo "demo: $1 needs a number (see bash scripts/demo.sh --help)" >&2
        exit 2
      fi
      declare "${1#--}=$((10#$2))"
      shift 2
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "demo: unknown argument '$1' (see bash scripts/demo.sh --help)" >&2
      exit 2
      ;;
  esac
done
if [ "$messages" -lt 1 ] || [ "$rate" -lt 1 ]; then
  echo "demo: --messages and --rate must be at least 1" >&2
  exit 2
fi
total=$((initial + messages))

bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target ringfeed
bin=$PWD/build/release/tools/ringfeed

ns=demo-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/ringfeed-demo.XXXXXX")
log=$work/log
mkdir "$log"
src=file:$log
fetch_pid=
produce_pid=
declare -A worker_pid=()

# Children still running are stopped (SIGTERM, then SIGKILL after 5 s), the namespace's
# segments and the temporary directory removed, whatever happened.
cleanup() {
  local status=$? pid
  trap - EXIT INT TERM
  local pids=("${worker_pid[@]}")
  [ -n "$produce_pid" ] && pids+=("$produce_pid")
  [ -n "$fetch_pid" ] && pids+=("$fetch_pid")
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f /dev/shm/ringfeed."$ns".*
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'echo "demo: interrupted" >&2; exit 130' INT TERM

fail() {
  echo "demo: FAILED: $*" >&2
  for f in "$work"/*.err; do
    [ -s "$f" ] && { echo "--- $(basename "$f" .err), standard error:" >&2; tail -n 5 "$f" >&2; }
  done
  exit 1
}
# Runs `ringfeed produce` in the background and waits for it: a signal to this script is
# handled at once rather than after produce is done (and cleanup stops produce too).
produce() {
  "$bin" produce "$@" &
  produce_pid=$!
  local rc=0
  wait "$produce_pid" || rc=$?
  produce_pid=
  return "$rc"
}
stat_json() { "$bin" stat --namespace "$ns" --json 2>/dev/null || true; }
# Waits until `cond` (a shell command) holds, polling every 50 ms; fails after $1 s
# with what was waited for.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$what: not after ${seconds} s"
    check_children
    sleep 0.05
  done
  # A group whose consumers are all gone has nothing left to lag behind with.
  check_children
}
# Every child started is still running.
check_children() {
  local name
  [ -z "$fetch_pid" ] || kill -0 "$fetch_pid" 2>/dev/null || fail "the fetcher exited early"
  for name in "${!worker_pid[@]}"; do
    kill -0 "${worker_pid[$name]}" 2>/dev/null || fail "worker $name exited early"
  done
}

start=$SECONDS
echo "== produce: $initial messages of $size bytes into $log/0.log"
produce --source "$src" --partition 0 --count "$initial" --size "$size" ||
  fail "produce of the initial batch"

echo "== fetch: namespace $ns, source $src, 1 partition"
"$bin" fetch --namespace "$ns" --source "$src" --partitions 1 2>"$work/fetch.err" &
fetch_pid=$!
ring_ready() { [ -e "/dev/shm/ringfeed.$ns.p0.ring" ]; }
wait_for 10 "the fetcher's ring /dev/shm/ringfeed.$ns.p0.ring" ring_ready

# A new group starts at the oldest message the ring holds for the groups there are, so
# a group made after another one took the backlog would miss it. The exclusive and
# shared groups are created first, taking nothing (consume --count 0): they hold the
# backlog until their workers take it. The broadcast worker, whose cursor lives as long
# as it does, attaches next, before any worker takes a message; then the others.
for g in "billing exclusive" "workers shared"; do
  read -r group mode <<<"$g"
  echo "== consume --count 0: create group $group, mode $mode"
  "$bin" consume --namespace "$ns" --partition 0 --group "$group" --mode "$mode" --count 0 \
    2>>"$work/groups.err" || fail "consume --count 0 could not create group $group"
done
# stat lists each group's consumers as "consumers":[{"pid":P,"alive":true,...},...].
attached() {
  [ "$(stat_json | grep -o '"consumers":\[[^]]*\]' | grep -o '"alive":true' | wc -l)" \
    -eq "$1" ]
}
# name mode group, in the order they attach (the table shows them in this order too)
workers=("audit broadcast audit" "billing exclusive billing" "workers-1 shared workers"
  "workers-2 shared workers")
for w in "${workers[@]}"; do
  read -r name mode group <<<"$w"
  echo "== consume: worker $name, group $group, mode $mode"
  "$bin" consume --namespace "$ns" --partition 0 --group "$group" --mode "$mode" \
    --latency --output none >"$work/$name.out" 2>"$work/$name.err" &
  worker_pid[$name]=$!
  [ "$mode" = broadcast ] && wait_for 10 "worker $name attached" attached 1
done
wait_for 10 "all ${#workers[@]} workers attached" attached "${#workers[@]}"

# Done when the ring holds all $1 messages and no group lags behind (3 groups).
all_consumed() {
  local j
  j=$(stat_json)
  [[ "$j" == *'"published":'"$1"'}'* ]] &&
    [ "$(grep -o '"lag":0,' <<<"$j" | wc -l)" -eq 3 ]
}
wait_for 20 "the backlog of $initial messages consumed by every group" all_consumed "$initial"

echo "== produce: $messages messages of $size bytes at $rate/s"
produce --source "$src" --partition 0 --count "$messages" --size "$size" --rate "$rate" ||
  fail "produce at $rate/s"
wait_for 20 "all $total messages consumed by every group" all_consumed "$total"

echo "== stop: SIGTERM to the workers, then to the fetcher"
for name in "${!worker_pid[@]}"; do
  kill -TERM "${worker_pid[$name]}" 2>/dev/null || fail "worker $name exited before SIGTERM"
done
for name in "${!worker_pid[@]}"; do
  rc=0
  wait "${worker_pid[$name]}" || rc=$?
  unset "worker_pid[$name]"
  [ "$rc" -eq 0 ] || fail "worker $name exited with status $rc"
done
kill -TERM "$fetch_pid" 2>/dev/null || fail "the fetcher exited before SIGTERM"
rc=0
wait "$fetch_pid" || rc=$?
fetch_pid=
[ "$rc" -eq 0 ] || fail "the fetcher exited with status $rc"
left=$(find /dev/shm -maxdepth 1 -name "ringfeed.$ns.*" -printf '%f ')
[ -z "$left" ] || fail "segments left behind: $left"

# One row per worker, from its latency line:
#   ringfeed consume: latency (publish to consume) of N messages: p50 V U  p90 V U ...
#   max V U  (also taken: B published before consume attached, T without a timestamp)
# shellcheck disable=SC2016  # an awk program: its $ are awk's
parse='
  /latency \(publish to consume\)/ {
    m = 0; b = 0; t = 0
    for (i = 1; i <= NF; i++) {
      if ($i == "of" && $(i + 2) == "messages:") m = $(i + 1)
      if ($i ~ /^(p50|p90|p99|p99\.9|max)$/) v[$i] = $(i + 1) " " $(i + 2)
      if ($i == "published" && $(i + 1) == "before") b = $(i - 1)
      if ($i == "without") t = $(i - 1)
    }
    printf "%s %s %s %s|%s|%s|%s|%s\n", m + b + t, m, b, v["p50"], v["p90"], v["p99"], v["p99.9"], v["max"]
    found = 1
  }
  END { if (!found) exit 1 }'
echo
echo "publish-to-consume latency per worker, of the $messages messages produced at $rate/s"
echo "while they were attached (TAKEN also counts the backlog of $initial, not measured)"
echo
table_format='%-10s %-8s %-10s %6s %9s  %-9s %-9s %-9s %-9s %s\n'
# shellcheck disable=SC2059
printf "$table_format" MODE GROUP WORKER TAKEN MEASURED P50 P90 P99 P99.9 MAX
shared_taken=0
shared_measured=0
for w in "${workers[@]}"; do
  read -r name mode group <<<"$w"
  row=$(awk "$parse" "$work/$name.err") ||
    fail "worker $name printed no latency line: $(tail -n 1 "$work/$name.err")"
  read -r taken measured _ rest <<<"$row"
  IFS='|' read -r p50 p90 p99 p999 max <<<"$rest"
  # shellcheck disable=SC2059
  printf "$table_format" "$mode" "$group" "$name" "$taken" "$measured" "$p50" "$p90" "$p99" \
    "$p999" "$max"
  if [ "$mode" = shared ]; then
    shared_taken=$((shared_taken + taken))
    shared_measured=$((shared_measured + measured))
  elif [ "$taken" -ne "$total" ] || [ "$measured" -ne "$messages" ]; then
    fail "worker $name ($mode) took $taken messages and measured $measured;" \
      "expected $total and $messages"
  fi
done
if [ "$shared_taken" -ne "$total" ] || [ "$shared_measured" -ne "$messages" ]; then
  fail "the shared workers took $shared_taken messages together and measured" \
    "$shared_measured; expected $total and $messages"
fi
echo
echo "ok: each group took all $total messages (the shared group's two workers between them);"
echo "workers and fetcher stopped by SIGTERM, exit 0; no /dev/shm/ringfeed.$ns.* left;"
echo "$((SECONDS - start)) s after the build."
