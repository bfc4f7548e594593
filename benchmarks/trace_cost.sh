#!/usr/bin/env bash
# What tracing costs per request, in one run: rounds that alternate a server from another checkout (OTHER: no tracing
# code, e.g. main), this tree with tracing off, and this tree with tracing on (always_on, every span exported over
# OTLP/HTTP to benchmarks/otlp_sink.py), each serving the same repository. Each tree runs from its own sources
# (PYTHONPATH), with this checkout's Python (PYTHON, default .venv/bin/python); SAMPLER and SAMPLER_ARG set
# OTEL_TRACES_SAMPLER[_ARG] (default always_on). Usage:
#   benchmarks/trace_cost.sh OTHER_CHECKOUT REPOSITORY MODEL [ROUNDS] [DURATION_S] [LEVELS]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
other=$(cd "$1" && pwd)
repo=$(cd "$2" && pwd)
model=$3
rounds=${4:-3}
duration=${5:-5}
levels=${6:-1,32}
python=${PYTHON:-$here/.venv/bin/python}
port=18051
sink_port=18052

"$python" "$here/benchmarks/otlp_sink.py" "$sink_port" &
sink=$!
trap 'kill $sink 2>/dev/null || true' EXIT
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores; model=$model; sampler=${SAMPLER:-always_on} ${SAMPLER_ARG:-}; other=$other ($(git -C "$other" rev-parse --short HEAD));" \
  "this=$here ($(git -C "$here" rev-parse --short HEAD))"
for round in $(seq "$rounds"); do
  echo "## round $round"
  for label in other off on; do
    tree=$([ "$label" = other ] && echo "$other" || echo "$here")
    trace=$([ "$label" = on ] && echo true || echo false)
    extra=()
    [ "$label" = other ] || extra=(--trace "$trace")
    (cd "$tree" && OTEL_TRACES_SAMPLER="${SAMPLER:-always_on}" OTEL_TRACES_SAMPLER_ARG="${SAMPLER_ARG:-}" \
      OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" \
      PYTHONPATH="$tree" exec "$python" -m cnnserve serve --model-repository "$repo" --host 127.0.0.1 \
      --grpc-port "$port" --http-port -1 --rest-port -1 --log-level ERROR "${extra[@]}" 2>/dev/null) &
    server=$!
    until PYTHONPATH="$here" "$python" -m cnnserve health --url "127.0.0.1:$port" >/dev/null 2>&1; do
      kill -0 "$server" 2>/dev/null || { echo "$label: the server exited before it was ready" >&2; exit 1; }
      sleep 0.3
    done
    PYTHONPATH="$here" "$python" -m cnnserve bench --url "127.0.0.1:$port" --model "$model" --concurrency "$levels" \
      --duration-s "$duration" --server-pid "$server" | sed -n '3,$p' | grep -E '^ +[0-9]' | sed "s/^/$label  /"
    kill -TERM "$server"
    wait "$server" || true
  done
done
echo "columns: concurrency items/s p50 p90 p99 (ms) | server CPU ms/request"
