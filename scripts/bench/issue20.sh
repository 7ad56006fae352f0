#!/usr/bin/env bash
# Issue 20's figures, back to back in one run, each Postern case next to the bare smtp-server
# ceiling (scripts/bench/bare-server.mjs: same TLS and AUTH, same greeting patch with no pause,
# TLS tickets). One JSON line per case on stdout, its "case" field naming it; the first line
# names the commit. Every run is bounded by SECS seconds (idle: by its connection count).
#
#   scripts/bench/issue20.sh                  # every case once, 20 s each (~4 minutes)
#   RUNS=3 SECS=30 scripts/bench/issue20.sh   # three rounds, alternating target and ceiling
#   CASES="devices workers" scripts/bench/issue20.sh
#   BUILD=0 ...                               # skip `npx tsc -p .` (the dist is current)
#   IDLE_CONNS=200 SECS=3 ...                 # a smoke run
#
# Cases (CASES, default all):
#   devices  one login per message, 10 connections: bare, postern; then both with --resume 1
#            (each connection offers its previous TLS session); resumed/resumed_share say how
#            many handshakes the server resumed
#   fifty    50 connections, many messages each: bare, postern (p99_ms; dropped, refused)
#   workers  50 connections, postern with [server] workers = 1 and = 2; then one login per
#            message, 10 connections, --resume 1, workers = 2 (tickets shared by the workers)
#   idle     2,000 idle TLS connections, workers = 1 and = 2: RSS per process and in all, as
#            soon as the last is open and once they sat idle for 20 s (IDLE_SETTLE)
#            (target: under 150 MB with one worker)
# CPU and RSS in every line are of the serve process and all its workers (server_cpu_s, and
# per process in "processes").
set -u
cd "$(dirname "$0")/../.."
SECS=${SECS:-20}
RUNS=${RUNS:-1}
CASES=${CASES:-devices fifty workers idle}
MANY=1000000 # messages: the time bound ends each run
IDLE_CONNS=${IDLE_CONNS:-2000}
IDLE_SETTLE=${IDLE_SETTLE:-20}

if [ "${BUILD:-1}" = 1 ]; then
  npx tsc -p . >&2 || { echo '{"bench":"issue20","error":"build failed (npx tsc -p .)"}'; exit 1; }
fi
dirty=false
git diff --quiet HEAD -- src 2>/dev/null || dirty=true
printf '{"bench":"issue20","commit":"%s","src_modified":%s,"date":"%s","secs":%s,"runs":%s,"node":"%s","cpus":%s}\n' \
  "$(git rev-parse --short HEAD 2>/dev/null)" "$dirty" "$(date -u +%FT%TZ)" "$SECS" "$RUNS" "$(node -v)" "$(nproc)"

# One case: its label, then the script and its options. A failed run prints a line saying so
# and the others go on (e.g. workers cases on a build without [server] workers).
run() {
  local label=$1 script=$2
  shift 2
  node "scripts/bench/$script" --label "$label" "$@" ||
    printf '{"case":"%s","error":"exited with %s"}\n' "$label" "$?"
}
submit() { run "$1" submit.mjs --seconds "$SECS" --messages "$MANY" "${@:2}"; }
has() { [[ " $CASES " == *" $1 "* ]]; }

for round in $(seq 1 "$RUNS"); do
  if has devices; then
    submit "devices, bare" --target bare --mode message --conns 10
    submit "devices, postern" --target postern --mode message --conns 10
    submit "devices resuming, bare" --target bare --mode message --conns 10 --resume 1
    submit "devices resuming, postern" --target postern --mode message --conns 10 --resume 1
  fi
  if has fifty; then
    submit "50 conns, bare" --target bare --conns 50
    submit "50 conns, postern" --target postern --conns 50
  fi
  if has workers; then
    submit "50 conns, postern, workers 1" --target postern --conns 50 --workers 1
    submit "50 conns, postern, workers 2" --target postern --conns 50 --workers 2
    submit "devices resuming, postern, workers 2" --target postern --mode message --conns 10 --resume 1 --workers 2
  fi
  if has idle; then
    run "idle $IDLE_CONNS, workers 1" idle.mjs --conns "$IDLE_CONNS" --seconds "$SECS" --settle "$IDLE_SETTLE" --workers 1
    run "idle $IDLE_CONNS, workers 2" idle.mjs --conns "$IDLE_CONNS" --seconds "$SECS" --settle "$IDLE_SETTLE" --workers 2
  fi
done
