#!/usr/bin/env bash
# accel convert's candidate table for the two models of docs/PERFORMANCE.md
# §11: the float ShuffleNetV2 fixture and ResNet-50 with random weights.
# Each table is one `accel convert` run: every candidate is measured by the
# same process, one after another, on the same input.
#
#   bench/convert.sh [path/to/accel]     # default: target/release/accel, else target/debug/accel
set -euo pipefail
cd "$(dirname "$0")/.."
ACCEL="${1:-}"
if [ -z "$ACCEL" ]; then
  if [ -x target/release/accel ]; then ACCEL=target/release/accel; else ACCEL=target/debug/accel; fi
fi
[ -f target/models/resnet50-random.onnx ] || cargo run -q --release -p accel-bench --bin gen_resnet
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export ACCEL_HOME="$WORK/home"
mkdir -p "$ACCEL_HOME" "$WORK/cal" "$WORK/val"
# The ONNX Runtime that scripts/test provisioned.
ln -s "$PWD/target/accel-home/engines" "$ACCEL_HOME/engines"
cp fixtures/images/{skimage_astronaut.png,skimage_rocket.jpg,sklearn_flower.jpg,mobilenet_caffe_cat.jpg} "$WORK/cal/"
cp fixtures/images/{skimage_chelsea.png,skimage_chelsea_q90.jpg,skimage_coffee.png,sklearn_china.jpg} "$WORK/val/"
LABELS=fixtures/labels/imagenet-simple-labels.json
"$ACCEL" models register shufflenet-f32 fixtures/models/shufflenet-v2-12-f32.onnx --preset torchvision --labels "$LABELS" >/dev/null
"$ACCEL" models register resnet50 target/models/resnet50-random.onnx --preset torchvision --labels "$LABELS" >/dev/null
echo "== ShuffleNetV2 (float fixture), calibration and validation with --augment (48 views each)"
"$ACCEL" convert shufflenet-f32 --precision int8 --calibration "$WORK/cal" --validation "$WORK/val" \
  --augment --threads 1,2 --min-time-ms 1500
echo "== ResNet-50 (random weights), 4 calibration and 4 validation photos"
"$ACCEL" convert resnet50 --precision auto --calibration "$WORK/cal" --validation "$WORK/val" \
  --threads 1,2 --min-time-ms 3000 --engine onnxruntime
