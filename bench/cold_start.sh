#!/usr/bin/env bash
# Cold start and memory of `accel serve` (run by hand, not in CI): from exec
# to the "ready" line (model read, sha256-checked, compiled, warmed up,
# listening), then resident memory after 50 requests. The first start in a
# fresh home optimizes the model and caches the result; the later starts load
# the cached optimized model.
#
#   cargo build --release -p accel-cli
#   cargo run -q -p accel-bench --bin gen_resnet     # target/models/resnet50-random.onnx
#   bench/cold_start.sh [MODEL.onnx] [STARTS]
set -euo pipefail
cd "$(dirname "$0")/.."
ACCEL=${ACCEL:-target/release/accel}
MODEL=${1:-target/models/resnet50-random.onnx}
STARTS=${2:-5}
export ACCEL_HOME=$(mktemp -d)
trap 'rm -rf "$ACCEL_HOME"' EXIT
ln -s "$PWD/target/accel-home/engines" "$ACCEL_HOME/engines"
"$ACCEL" models register m "$MODEL" --preset torchvision >/dev/null
echo "| start | exec → ready ms | first request ms | requests 2–51 p50 ms | RSS after 51 requests MB |"
echo "|---:|---:|---:|---:|---:|"
for i in $(seq 1 "$STARTS"); do
    log="$ACCEL_HOME/serve.log"
    : >"$log"
    t0=$(date +%s%N)
    "$ACCEL" serve --model m --grpc-port 0 --http-port 0 >"$log" 2>&1 &
    pid=$!
    until grep -q ready "$log"; do sleep 0.002; done
    t1=$(date +%s%N)
    addr=$(grep -o 'grpc=[0-9.:]*' "$log" | cut -d= -f2)
    first=$("$ACCEL" bench "$addr" --service m fixtures/images/sklearn_china.jpg --requests 1 --warmup 0 --json |
        python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["latency_ms"]["p50"])')
    rest=$("$ACCEL" bench "$addr" --service m fixtures/images/sklearn_china.jpg --requests 50 --warmup 0 --json |
        python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["latency_ms"]["p50"])')
    rss=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$pid/status")
    echo "| $i | $(( (t1 - t0) / 1000000 )) | $first | $rest | $rss |"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done
