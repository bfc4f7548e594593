#!/usr/bin/env bash
# Builds the benchmark models, then for each one starts a server on loopback and runs `cnnserve bench` against it,
# beside in-process ONNX Runtime on the same file with the same thread settings. Usage:
#   benchmarks/run.sh [DURATION_S] [CONCURRENCY_LEVELS]        e.g. benchmarks/run.sh 10 1,2,8,32
#   MODELS="digits_cnn digits_cnn_unbatched" benchmarks/run.sh 8 1,32    (a subset)
# Models: heavy_cnn (random weights, ~0.2 GFLOP per 3x64x64 image), digits_cnn and dcgan_digits from
# ./model_repository (trained by `make run` or `cnnserve train defaults`), and digits_cnn_unbatched (the same
# file with dynamic batching off) to show what batching saves. Each model runs with unary calls at every level, then
# with one ModelStreamInfer stream per client at the highest level (gRPC's per-message cost is a third of a call's).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
LEVELS=${2:-1,2,8,32}
REPO=benchmarks/model_repository
BIN=.venv/bin
GRPC=127.0.0.1:18001

mkdir -p "$REPO"
[ -d "$REPO/heavy_cnn" ] || $BIN/cnnserve train benchmark-models --model-repository "$REPO"
[ -d model_repository/digits_cnn ] || $BIN/cnnserve train defaults --model-repository model_repository
for model in digits_cnn dcgan_digits; do
  [ -d "$REPO/$model" ] || cp -r "model_repository/$model" "$REPO/$model"
done
# variant NAME FROM JSON: a copy of model FROM whose config.json is updated with JSON.
variant() {
  [ -d "$REPO/$1" ] && return
  cp -r "$REPO/$2" "$REPO/$1"
  $BIN/python - "$REPO/$1/config.json" "$1" "$3" <<'PY'
import json, sys
path, name, update = sys.argv[1:]
config = json.load(open(path))
config.update(name=name, **json.loads(update))
json.dump(config, open(path, "w"), indent=2)
PY
}
variant digits_cnn_unbatched digits_cnn '{"dynamic_batching": null}'
# Two single-threaded instances instead of one session with a thread per core: measured here, two 1-thread
# sessions run heavy_cnn at ~750 images/s together against ~630 for one 2-thread session.
variant heavy_cnn_2x1 heavy_cnn '{"instance_count": 2, "session": {"intra_op_threads": 1}}'
# One single-threaded instance: leaves a core to the RPC layer and the client on a 2-core machine.
variant heavy_cnn_1x1 heavy_cnn '{"session": {"intra_op_threads": 1}}'

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
# The floor: what the RPC layer alone costs per call here (a server that answers without doing anything).
if [ -z "${MODELS:-}" ]; then
  $BIN/python benchmarks/echo_server.py 18003 images FP32 -1,1,16,16 &
  echo_server=$!
  sleep 2
  echo
  echo "## grpc_echo (benchmarks/echo_server.py: Python gRPC aio + uvloop, no model: the transport's floor)"
  $BIN/cnnserve bench --url 127.0.0.1:18003 --model echo --concurrency "${LEVELS##*,}" --duration-s "$DURATION" \
    --server-pid "$echo_server"
  $BIN/cnnserve bench --url 127.0.0.1:18003 --model echo --concurrency "${LEVELS##*,}" --duration-s "$DURATION" \
    --server-pid "$echo_server" --streaming
  kill "$echo_server"
  wait "$echo_server" 2>/dev/null || true
fi
for model in ${MODELS:-heavy_cnn heavy_cnn_2x1 heavy_cnn_1x1 dcgan_digits digits_cnn digits_cnn_unbatched}; do
  $BIN/cnnserve serve --model-repository "$REPO" --host 127.0.0.1 --grpc-port 18001 --http-port 18002 \
    --model-control-mode explicit --startup-models "$model" --log-level WARNING &
  server=$!
  until $BIN/cnnserve health --url "$GRPC" >/dev/null 2>&1; do sleep 0.5; done
  version=$(ls "$REPO/$model" | grep -E '^[0-9]+$' | sort -n | tail -1)
  # the in-process run uses the model's own thread settings: instance_count sessions of intra_op_threads each
  read -r instances threads < <($BIN/python -c "import json,sys; c=json.load(open(sys.argv[1])); \
print(c.get('instance_count', 1), c.get('session', {}).get('intra_op_threads', 0))" "$REPO/$model/config.json")
  echo
  echo "## $model (instances=$instances intra_op_threads=$threads)"
  for calls in unary streaming; do
    flags=(--concurrency "$LEVELS")
    [ "$calls" = streaming ] && flags=(--concurrency "${LEVELS##*,}" --streaming)  # the highest level only
    $BIN/cnnserve bench --url "$GRPC" --model "$model" "${flags[@]}" --duration-s "$DURATION" \
      --model-file "$REPO/$model/$version/model.onnx" --server-pid "$server" --instances "$instances" \
      --threads "$threads"
  done
  kill -TERM "$server"
  wait "$server" || true
done
