#!/usr/bin/env bash
# Accel's own serving settings side by side (run by hand, not in CI): the
# same model and photo, one fresh `accel serve` per setting, `accel bench`
# at concurrency 1 (--requests) and 4 (--duration), server stage times.
#
#   cargo build --release -p accel-cli
#   bench/server_settings.sh [MODEL.onnx] [REQUESTS] [SECONDS]
#
# Default model: the bundled ShuffleNetV2 int8 QDQ. Needs ONNX Runtime in
# target/accel-home/engines (scripts/test provisions it).
set -euo pipefail
cd "$(dirname "$0")/.."
ACCEL=${ACCEL:-target/release/accel}
MODEL=${1:-fixtures/models/shufflenet-v2-12-qdq.onnx}
REQUESTS=${2:-400}
SECONDS_C4=${3:-5}
PHOTO=fixtures/images/sklearn_china.jpg
export ACCEL_HOME=$(mktemp -d)
trap 'rm -rf "$ACCEL_HOME"' EXIT
mkdir -p "$ACCEL_HOME" && ln -s "$PWD/target/accel-home/engines" "$ACCEL_HOME/engines"
"$ACCEL" models register m "$MODEL" --preset torchvision >/dev/null

run() {
    "$ACCEL" serve --model m --grpc-port 0 --http-port 0 "$@" >"$ACCEL_HOME/serve.log" 2>&1 &
    local pid=$!
    until grep -q ready "$ACCEL_HOME/serve.log"; do sleep 0.05; done
    local addr
    addr=$(grep -o 'grpc=[0-9.:]*' "$ACCEL_HOME/serve.log" | cut -d= -f2)
    echo "== accel serve $*"
    "$ACCEL" bench "$addr" --service m "$PHOTO" --requests "$REQUESTS" --warmup 20 | sed -n 2,3p
    "$ACCEL" bench "$addr" --service m "$PHOTO" --duration "$SECONDS_C4" --concurrency 4 | sed -n 1,3p
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

run --preprocess-workers 1
run --preprocess-workers 0
run --preprocess-workers 1 --engine-spin false
run --preprocess-workers 2 --engine-spin false
run --threads 1 --preprocess-workers 1
