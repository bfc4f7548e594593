#!/usr/bin/env bash
# Measures one model of a repository with Triton's own load generator, perf_analyzer: starts cnnserve on free loopback
# ports with only that model loaded, waits until it is ready, runs perf_analyzer once per concurrency level (closed
# loop, synchronous calls, batch size 1) over gRPC and over HTTP/REST, prints throughput and p50/p90/p99 client
# latency per level, plus the requests the server refused meanwhile (from its /metrics), then stops the server.
# Usage:
#   benchmarks/perf_analyzer.sh [PERF_ANALYZER] MODEL_REPOSITORY MODEL
#   PERF_ANALYZER=/work/pa-venv/bin/perf_analyzer benchmarks/perf_analyzer.sh model_repository digits_cnn
# Settings (environment): LEVELS="1 2 4 8 16 32 64 128 256"  PROTOCOLS="grpc http"  INTERVAL_MS=3000 (one
# measurement window)  STABILITY=10 (percent; perf_analyzer gives up on a level whose windows differ more)
# PA_ARGS="" (more perf_analyzer flags, e.g. "--shape images:1,16,16")  CNNSERVE=.venv/bin/cnnserve
# SERVER_ARGS="" (more `cnnserve serve` flags).
# Getting perf_analyzer: PyPI's `perf-analyzer` 0.1.0 is an empty placeholder, but the Linux x86_64 wheels of
# `tritonclient` up to 2.60 carry the binary as tritonclient-X.data/data/bin/perf_analyzer, installed to the venv's
# bin/ (2.61 on have none; 2.60's needs glibc 2.38 and 2.30's libssl 1.1, which Debian 12 lacks; 2.35 to 2.50 run).
# It links libb64.so.0d and libcudart.so.12 (no GPU needed); keep it out of the project's venv:
#   apt-get install libb64-0d
#   python3 -m venv /work/pa-venv
#   /work/pa-venv/bin/pip install tritonclient==2.41.0 nvidia-cuda-runtime-cu12
# This script finds that libcudart (nvidia/cuda_runtime/lib in the venv beside the binary) by itself.
# Mind: perf_analyzer asks for every output in the model's metadata, so for digits_cnn each answer carries its four
# feature maps too (about 61 KB, not 40 bytes of logits), and it stops a level at the first failed request, so a
# model with a latency_budget_ms aborts its levels at the first RESOURCE_EXHAUSTED refusal.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 3 ]; then PERF_ANALYZER=$1; shift; fi
if [ $# -ne 2 ] || [ -z "${PERF_ANALYZER:-}" ]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
REPO=$1
MODEL=$2
LEVELS=${LEVELS:-1 2 4 8 16 32 64 128 256}
PROTOCOLS=${PROTOCOLS:-grpc http}
INTERVAL_MS=${INTERVAL_MS:-3000}
STABILITY=${STABILITY:-10}
CNNSERVE=${CNNSERVE:-.venv/bin/cnnserve}
[ -x "$PERF_ANALYZER" ] || { echo "perf_analyzer not found or not executable: $PERF_ANALYZER" >&2; exit 2; }
[ -d "$REPO/$MODEL" ] || { echo "no model $MODEL in $REPO" >&2; exit 2; }

# The tritonclient wheel's binary links libcudart.so.12; the nvidia-cuda-runtime-cu12 wheel puts it in site-packages.
if ldd "$PERF_ANALYZER" 2>/dev/null | grep -q 'libcudart.so.12 => not found'; then
  for dir in "$(dirname "$PERF_ANALYZER")"/../lib/python3*/site-packages/nvidia/cuda_runtime/lib; do
    [ -d "$dir" ] && export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
fi
if ldd "$PERF_ANALYZER" | grep 'not found' >&2; then
  echo "perf_analyzer misses the shared libraries above (libb64.so.0d: apt-get install libb64-0d)" >&2
  exit 2
fi

# Three free loopback ports (held open together, so they differ), then the server on them.
read -r GRPC_PORT REST_PORT HTTP_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
WORK=$(mktemp -d /tmp/perf_analyzer.XXXXXX)
LOG=$WORK/server.log
# shellcheck disable=SC2086  # SERVER_ARGS is a list of flags
"$CNNSERVE" serve --model-repository "$REPO" --host 127.0.0.1 --grpc-port "$GRPC_PORT" --rest-port "$REST_PORT" \
  --http-port "$HTTP_PORT" --model-control-mode explicit --startup-models "$MODEL" ${SERVER_ARGS:-} >"$LOG" 2>&1 &
SERVER=$!
stop_server() {
  kill -TERM "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
}
trap stop_server EXIT
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$REST_PORT/v2/health/ready" >/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { echo "cnnserve exited; its log:" >&2; cat "$LOG" >&2; exit 1; }
  sleep 0.5
done
curl -sf "http://127.0.0.1:$REST_PORT/v2/models/$MODEL/ready" >/dev/null \
  || { echo "model $MODEL not ready after 60 s; log: $LOG" >&2; exit 1; }

# Requests of MODEL the server answered with anything but success, from its Prometheus text.
refused() {
  { curl -sf "http://127.0.0.1:$HTTP_PORT/metrics" || true; } | awk -v m="model=\"$MODEL\"" \
    '/^cnnserve_requests_total\{/ && index($0, m) && !/outcome="success"/ {n += $NF} END {printf "%d", n}'
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $("$PERF_ANALYZER" --version 2>&1 | head -1), model $MODEL," \
  "window ${INTERVAL_MS} ms, stability ${STABILITY}%, server log $LOG"
printf '%-5s %6s %10s %9s %9s %9s %8s  %-6s %s\n' proto conc "infer/s" "p50 ms" "p90 ms" "p99 ms" refused load1 result
for proto in $PROTOCOLS; do
  case $proto in
    grpc) url=127.0.0.1:$GRPC_PORT ;;
    http) url=127.0.0.1:$REST_PORT ;;
    *) echo "unknown protocol $proto (grpc or http)" >&2; exit 2 ;;
  esac
  for c in $LEVELS; do
    csv=$WORK/$proto-$c.csv
    out=$WORK/$proto-$c.log
    load=$(cut -d' ' -f1 /proc/loadavg)
    before=$(refused)
    status=0
    # shellcheck disable=SC2086  # PA_ARGS is a list of flags
    timeout 600 "$PERF_ANALYZER" -m "$MODEL" -i "$proto" -u "$url" --concurrency-range "$c" \
      --measurement-interval "$INTERVAL_MS" -s "$STABILITY" -f "$csv" ${PA_ARGS:-} >"$out" 2>&1 || status=$?
    refusals=$(($(refused) - before))
    if [ "$status" -eq 0 ] && [ -s "$csv" ]; then
      result=ok
      # perf_analyzer's CSV: latencies in microseconds, columns found by their header names
      read -r rate p50 p90 p99 < <(awk -F, 'NR == 1 {for (i = 1; i <= NF; i++) col[$i] = i; next}
        NR == 2 {printf "%.0f %.2f %.2f %.2f\n", $col["Inferences/Second"], $col["p50 latency"] / 1000,
                 $col["p90 latency"] / 1000, $col["p99 latency"] / 1000}' "$csv")
    else
      rate=- p50=- p90=- p99=-
      # the first request's error when one failed (perf_analyzer stops there), else its complaint (unstable ...)
      message=$(grep -m1 'had error' "$out" || grep -m1 -iE 'error|failed' "$out" || tail -1 "$out")
      result="exit $status: $message"
    fi
    printf '%-5s %6s %10s %9s %9s %9s %8s  %-6s %s\n' "$proto" "$c" "$rate" "$p50" "$p90" "$p99" "$refusals" \
      "$load" "$result"
  done
done
grep -E ' (WARNING|ERROR|CRITICAL) ' "$LOG" | grep -vE 'event=(insecure|auth_off|provider_unavailable)' \
  | sed 's/^/server: /' || true
