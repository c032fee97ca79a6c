#!/usr/bin/env bash
# Cross-check `accel bench` against Triton's perf_analyzer on the same
# server, protocol and load: KServe v2 gRPC ModelInfer, one BYTES input
# (the JPEG fixtures/images/sklearn_china.jpg), batch 1, concurrency 1,
# a fixed number of requests after a warm-up, one tool right after the
# other (ROUNDS times). Prints both tools' p50/p99/throughput and the
# ratios accel/perf_analyzer. Run by hand (not in CI), from anywhere:
#
#   bench/perf_analyzer_crosscheck.sh
#
# Environment: ACCEL_BIN (default: build target/release/accel), REQUESTS
# (200), WARMUP (20), ROUNDS (5), ENGINE (auto), WORK (a temp dir).
# On a shared or busy machine single rounds disagree by 2x either way (the
# server's own infer time moves as much); compare the medians over rounds.
# perf_analyzer's throughput under --request-count is the count over the
# window rounded up to whole seconds (200 requests read 100, 66.7 or 50
# req/s), so compare latencies first; accel bench divides by wall time.
#
# perf_analyzer comes from the PyPI package perf-analyzer==2.60.0, installed
# into a venv under $WORK (never into the repository). Its wheel is tagged
# manylinux_2_38 (it needs glibc >= 2.38 and GLIBCXX_3.4.32); on an older
# system (e.g. Debian 12, glibc 2.36) pip finds no matching distribution,
# so the script downloads the wheel for that platform and runs its binary
# under the glibc/libstdc++ of Debian 13 (trixie), fetched with apt-get
# download into a private apt directory under $WORK (the system is left
# alone).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REQUESTS=${REQUESTS:-200}
WARMUP=${WARMUP:-20}
ROUNDS=${ROUNDS:-5}
ENGINE=${ENGINE:-auto}
WORK=${WORK:-$(mktemp -d /tmp/accel-pa.XXXXXX)}
PA_VERSION=2.60.0
IMAGE=$ROOT/fixtures/images/sklearn_china.jpg
MODEL=$ROOT/fixtures/models/shufflenet-v2-12-qdq.onnx
echo "work dir: $WORK" >&2

# ---------------------------------------------------------------- accel
if [[ -z "${ACCEL_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --release -p accel-cli >&2)
    ACCEL_BIN=$ROOT/target/release/accel
fi
export ACCEL_HOME=$WORK/home
mkdir -p "$ACCEL_HOME"
# Reuse the ONNX Runtime that scripts/test provisioned, if any.
if [[ -d $ROOT/target/accel-home/engines ]]; then
    ln -sfn "$ROOT/target/accel-home/engines" "$ACCEL_HOME/engines"
fi

# ---------------------------------------------------------------- perf_analyzer
PA=()
python3 -m venv "$WORK/venv"
if "$WORK/venv/bin/pip" install -q "perf-analyzer==$PA_VERSION" 2>"$WORK/pip.err"; then
    PA=("$WORK/venv/bin/perf_analyzer")
else
    echo "pip install perf-analyzer==$PA_VERSION failed: $(tail -1 "$WORK/pip.err")" >&2
    echo "falling back to the manylinux_2_38 wheel under a newer glibc" >&2
    "$WORK/venv/bin/pip" download -q --no-deps --only-binary=:all: \
        --platform manylinux_2_38_x86_64 "perf-analyzer==$PA_VERSION" -d "$WORK/wheel"
    python3 -m zipfile -e "$WORK"/wheel/perf_analyzer-*.whl "$WORK/wheel/x"
    bin=$WORK/wheel/x/perf_analyzer/bin/perf_analyzer
    chmod +x "$bin"
    if "$bin" --version >/dev/null 2>&1; then
        PA=("$bin")
    else
        apt=$WORK/apt
        mkdir -p "$apt"/{lists/partial,cache/archives/partial,debs,root}
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" >"$apt/sources.list"
        touch "$apt/status"
        opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
              -o "Dir::State::status=$apt/status" -o APT::Architectures=amd64)
        apt-get "${opts[@]}" update >&2
        (cd "$apt/debs" && apt-get "${opts[@]}" download libc6 libstdc++6 libgcc-s1 >&2)
        for d in "$apt"/debs/*.deb; do dpkg-deb -x "$d" "$apt/root"; done
        lib=$apt/root/usr/lib/x86_64-linux-gnu
        PA=("$lib/ld-linux-x86-64.so.2" --library-path "$lib:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu" "$bin")
    fi
fi
"${PA[@]}" --version >&2

# perf_analyzer takes a BYTES tensor's b64 data as the serialized tensor:
# each element a 4-byte little-endian length, then its bytes.
python3 - "$IMAGE" "$WORK/input.json" <<'EOF'
import base64, json, struct, sys
jpeg = open(sys.argv[1], "rb").read()
raw = struct.pack("<I", len(jpeg)) + jpeg
json.dump({"data": [{"input": {"b64": base64.b64encode(raw).decode()}}]}, open(sys.argv[2], "w"))
EOF

# ---------------------------------------------------------------- serve
"$ACCEL_BIN" models register shufflenet "$MODEL" --preset torchvision \
    --labels "$ROOT/fixtures/labels/imagenet-simple-labels.json" >&2
"$ACCEL_BIN" serve --model shufflenet --service shufflenet --engine "$ENGINE" \
    >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q '^ready' "$WORK/serve.out" 2>/dev/null && break
    sleep 0.2
done
GRPC=$(sed -n 's/^ready grpc=\([^ ]*\) .*/\1/p' "$WORK/serve.out")
[[ -n $GRPC ]] || { cat "$WORK/serve.err" >&2; exit 1; }
echo "accel serve: grpc=$GRPC" >&2

# ---------------------------------------------------------------- measure
for round in $(seq "$ROUNDS"); do
    "${PA[@]}" -m shufflenet -u "$GRPC" -i grpc --input-data "$WORK/input.json" \
        --shape input:1 -b 1 --concurrency-range 1 \
        --request-count "$REQUESTS" --warmup-request-count "$WARMUP" \
        -f "$WORK/pa-$round.csv" >"$WORK/pa-$round.log" 2>&1 \
        || { cat "$WORK/pa-$round.log" >&2; exit 1; }
    "$ACCEL_BIN" bench "$GRPC" --service shufflenet "$IMAGE" --protocol kserve-grpc \
        --concurrency 1 --requests "$REQUESTS" --warmup "$WARMUP" --json >"$WORK/accel-$round.json"
done

python3 - "$WORK" "$ROUNDS" <<'EOF'
import csv, json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
print(f"{'round':>5} {'tool':<14} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
runs = {"perf_analyzer": [], "accel bench": []}
for r in range(1, rounds + 1):
    row = next(csv.DictReader(open(f"{work}/pa-{r}.csv")))
    pa = (float(row["p50 latency"]) / 1e3, float(row["p99 latency"]) / 1e3, float(row["Inferences/Second"]))
    b = json.load(open(f"{work}/accel-{r}.json"))
    ac = (b["latency_ms"]["p50"], b["latency_ms"]["p99"], b["throughput_rps"])
    for name, (p50, p99, rps) in (("perf_analyzer", pa), ("accel bench", ac)):
        runs[name].append((p50, p99, rps))
        print(f"{r:>5} {name:<14} {p50:8.2f} {p99:8.2f} {rps:8.1f}")
    print(f"{r:>5} {'accel/pa':<14} {ac[0] / pa[0]:8.3f} {ac[1] / pa[1]:8.3f} {ac[2] / pa[2]:8.3f}")
    if b.get("errors"):
        print(f"      accel bench errors: {b['errors_by_status']}")
    st = b.get("server_timing_ms")
    if st:
        print("      server p50 ms: " + "  ".join(f"{k} {v['p50']:.2f}" for k, v in st.items()))
med = {n: [statistics.median(x[i] for x in v) for i in range(3)] for n, v in runs.items()}
for name, (p50, p99, rps) in med.items():
    print(f"{'med':>5} {name:<14} {p50:8.2f} {p99:8.2f} {rps:8.1f}")
print("(perf_analyzer's req/s: request count over whole seconds; see the header)")
pa, ac = med["perf_analyzer"], med["accel bench"]
print(f"{'med':>5} {'accel/pa':<14} {ac[0] / pa[0]:8.3f} {ac[1] / pa[1]:8.3f} {ac[2] / pa[2]:8.3f}")
EOF
