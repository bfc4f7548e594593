#!/usr/bin/env bash
# The request path's cost before and after a change, in one run: rounds that alternate the transport's floor
# (benchmarks/echo_server.py), a server built from another checkout (OTHER, with its own .venv) and this one, each
# serving the same model file, so the VM's drift hits both sides alike. Usage:
#   benchmarks/compare_trees.sh OTHER_CHECKOUT REPOSITORY [MODEL] [ROUNDS] [DURATION_S] [LEVELS]
#   e.g. git worktree add /tmp/before HEAD~5 && (cd /tmp/before && make .venv/.installed)
#        benchmarks/compare_trees.sh /tmp/before model_repository digits_cnn 3 8 1,32
# Both servers read REPOSITORY, so it must hold models the older checkout can load.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
other=$(cd "$1" && pwd)
repo=$(cd "$2" && pwd)
model=${3:-digits_cnn}
rounds=${4:-3}
duration=${5:-8}
levels=${6:-1,32}
port=18041
version=$(ls "$repo/$model" | grep -E '^[0-9]+$' | sort -n | tail -1)
threads=$("$here/.venv/bin/python" -c "import json,sys; print(json.load(open(sys.argv[1])).get('session', {}) \
.get('intra_op_threads', 0))" "$repo/$model/config.json")

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores; model=$model; other=$other ($(git -C "$other" rev-parse --short HEAD));" \
  "this=$here ($(git -C "$here" rev-parse --short HEAD))"
for round in $(seq "$rounds"); do
  echo "## round $round"
  "$here/.venv/bin/python" "$here/benchmarks/echo_server.py" 18043 images FP32 -1,1,16,16 &
  echo_server=$!
  sleep 2
  printf 'floor  '
  "$here/.venv/bin/cnnserve" bench --url 127.0.0.1:18043 --model echo --concurrency "${levels##*,}" \
    --duration-s "$duration" --server-pid "$echo_server" | sed -n 3p
  kill "$echo_server"
  wait "$echo_server" 2>/dev/null || true
  for tree in "$other" "$here"; do
    label=$([ "$tree" = "$here" ] && echo this || echo other)
    (cd "$tree" && exec .venv/bin/cnnserve serve --model-repository "$repo" --host 127.0.0.1 --grpc-port "$port" \
      --http-port -1 --model-control-mode explicit --startup-models "$model" --log-level ERROR 2>/dev/null) &
    server=$!
    waited_from=$SECONDS
    until "$here/.venv/bin/cnnserve" health --url "127.0.0.1:$port" >/dev/null 2>&1; do
      kill -0 "$server" 2>/dev/null || { echo "$label: the server exited before it was ready" >&2; exit 1; }
      if (( SECONDS - waited_from > 120 )); then  # up but never ready: usually a config the older code refuses
        echo "$label: not ready after 120 s; its repository index says:" >&2
        "$here/.venv/bin/cnnserve" models --url "127.0.0.1:$port" >&2 || true
        kill -TERM "$server"
        exit 1
      fi
      sleep 0.3
    done
    "$here/.venv/bin/cnnserve" bench --url "127.0.0.1:$port" --model "$model" --concurrency "$levels" \
      --duration-s "$duration" --server-pid "$server" --model-file "$repo/$model/$version/model.onnx" \
      --threads "$threads" | sed -n '3,$p' | grep -E '^ +[0-9]' | sed "s/^/$label  /"
    kill -TERM "$server"
    wait "$server" || true
  done
done
echo "columns: concurrency items/s p50 p90 p99 (ms) | raw batch, raw items/s, raw p50, ratio | server CPU ms/request"
