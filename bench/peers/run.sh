#!/usr/bin/env bash
# Runs the shared peer benchmark with conveyor's three stores in the same run as the peers:
# copies ../shared/peer-bench to a temp dir, sets it up, runs it, and copies the results to
# bench/results/peers.{md,json}, then the I/O-bound scenario (every task waits 100 ms: N=2,000)
# to bench/results/peers-io.{md,json}. BENCH_QUEUES / BENCH_N / BENCH_CAP_S pass through to the
# first; PEER_SCENARIOS=noop or =io runs one of the two.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="${PEER_BENCH:-$ROOT/../shared/peer-bench}"
[ -d "$SRC" ] || { echo "no peer benchmark at $SRC (set PEER_BENCH)" >&2; exit 1; }
WORK="${PEER_BENCH_WORK:-/tmp/conveyor-peer-bench}"
mkdir -p "$WORK"
cp -r "$SRC"/. "$WORK"/
chmod -R u+w "$WORK"
cd "$WORK"
[ -x .venv/bin/python ] || ./setup.sh
VENV="$ROOT/.venv"
export BENCH_EXTRA_DRIVERS_DIR="$ROOT/bench/peers"
export BENCH_EXTRA="conveyor-sqlite:q_conveyor:$VENV::sqlite,conveyor-postgres:q_conveyor:$VENV:pg:postgres,conveyor-redis:q_conveyor:$VENV::redis"
mkdir -p "$ROOT/bench/results"
SCENARIOS="${PEER_SCENARIOS:-noop io}"
if [[ " $SCENARIOS " == *" noop "* ]]; then
  ./run.sh
  cp results.md "$ROOT/bench/results/peers.md"
  cp results.json "$ROOT/bench/results/peers.json"
  echo "results: $ROOT/bench/results/peers.md"
fi
if [[ " $SCENARIOS " == *" io "* ]]; then
  BENCH_TASK_SLEEP_MS=100 BENCH_N=2000 BENCH_LAT_N=20 BENCH_CAP_S=60 ./run.sh
  cp results.md "$ROOT/bench/results/peers-io.md"
  cp results.json "$ROOT/bench/results/peers-io.json"
  echo "results: $ROOT/bench/results/peers-io.md"
fi
