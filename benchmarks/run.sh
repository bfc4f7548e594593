#!/usr/bin/env bash
# Builds the benchmark models, then for each one starts a server on loopback and runs `cnnserve bench` against it,
# beside in-process ONNX Runtime on the same file with the same thread settings. Usage:
#   benchmarks/run.sh [DURATION_S] [CONCURRENCY_LEVELS]        e.g. benchmarks/run.sh 10 1,8,32
# Models: heavy_cnn (random weights, ~0.2 GFLOP per 3x64x64 image), digits_cnn and dcgan_digits from
# ./model_repository (trained by `make run` or `cnnserve train defaults`), and digits_cnn_unbatched (the same
# file with dynamic batching off) to show what batching saves.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
LEVELS=${2:-1,8,32}
REPO=benchmarks/model_repository
BIN=.venv/bin
GRPC=127.0.0.1:18001

mkdir -p "$REPO"
[ -d "$REPO/heavy_cnn" ] || $BIN/cnnserve train benchmark-models --model-repository "$REPO"
[ -d model_repository/digits_cnn ] || $BIN/cnnserve train defaults --model-repository model_repository
for model in digits_cnn dcgan_digits; do
  [ -d "$REPO/$model" ] || cp -r "model_repository/$model" "$REPO/$model"
done
if [ ! -d "$REPO/digits_cnn_unbatched" ]; then
  cp -r "$REPO/digits_cnn" "$REPO/digits_cnn_unbatched"
  $BIN/python - "$REPO/digits_cnn_unbatched/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config.update(name="digits_cnn_unbatched", dynamic_batching=None)
json.dump(config, open(path, "w"), indent=2)
PY
fi

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for model in heavy_cnn dcgan_digits digits_cnn digits_cnn_unbatched; do
  $BIN/cnnserve serve --model-repository "$REPO" --host 127.0.0.1 --grpc-port 18001 --http-port 18002 \
    --model-control-mode explicit --startup-models "$model" --log-level WARNING &
  server=$!
  until $BIN/cnnserve health --url "$GRPC" >/dev/null 2>&1; do sleep 0.5; done
  version=$(ls "$REPO/$model" | grep -E '^[0-9]+$' | sort -n | tail -1)
  echo
  $BIN/cnnserve bench --url "$GRPC" --model "$model" --concurrency "$LEVELS" --duration-s "$DURATION" \
    --model-file "$REPO/$model/$version/model.onnx" --server-pid "$server"
  kill -TERM "$server"
  wait "$server" || true
done
