#!/usr/bin/env bash
# Soak (issue 8, item 2; run by hand, not in CI): one `accel serve`
# (ShuffleNetV2 int8 QDQ), `accel bench` against it for DURATION seconds at
# concurrency 8 with 5 % malformed requests mixed in, answers checked; the
# server's RSS sampled every 5 s. Pass: zero crashes (the server we started
# is alive, same PID, no panic in its log), every malformed request refused
# as invalid, zero wrong answers, zero errors on good requests, RSS growth
# after warm-up <= 5 %, p99 stable (every interval's p99 within 1.5 x the
# median interval p99).
#
#   bench/soak.sh                              # 10 minutes
#   DURATION=60 INTERVAL=10 WARMUP_S=20 bench/soak.sh   # a quick run
#
# Environment: ACCEL (default target/release/accel, built if missing),
# DURATION (600 s), CONCURRENCY (8), MALFORMED (5 %), INTERVAL (60 s, the
# p50/p99 report), WARMUP_S (60: the RSS baseline is the first sample at or
# after it), SAMPLE_S (5), PROTOCOL (tfs-grpc; kserve-grpc, kserve-http,
# tfs-rest), OUT (target/soak: rss.csv, bench.json, serve.log, summary.md),
# SERVE_ARGS (extra `accel serve` flags). Needs ONNX Runtime in
# target/accel-home/engines (scripts/test provisions it).
set -euo pipefail
cd "$(dirname "$0")/.."
ACCEL=${ACCEL:-target/release/accel}
DURATION=${DURATION:-600}
CONCURRENCY=${CONCURRENCY:-8}
MALFORMED=${MALFORMED:-5}
INTERVAL=${INTERVAL:-60}
WARMUP_S=${WARMUP_S:-60}
SAMPLE_S=${SAMPLE_S:-5}
PROTOCOL=${PROTOCOL:-tfs-grpc}
OUT=${OUT:-target/soak}
SERVE_ARGS=${SERVE_ARGS:-}
# shellcheck source=bench/lib.sh
source bench/lib.sh

mkdir -p "$OUT"
rm -f "$OUT/rss.csv" "$OUT/bench.json" "$OUT/serve.log" "$OUT/summary.md"
sampler=
cleanup() {
    [[ -n $sampler ]] && kill "$sampler" 2>/dev/null || true
    stop_server
}
trap cleanup EXIT
make_home
# shellcheck disable=SC2086 # SERVE_ARGS is a list of flags
start_server "$OUT/serve.log" $SERVE_ARGS

# RSS every SAMPLE_S seconds from the start of the measured run.
t0=$(date +%s.%N)
(
    echo "t_s,rss_kb"
    while kill -0 "$pid" 2>/dev/null; do
        rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null) || break
        awk -v a="$(date +%s.%N)" -v b="$t0" -v r="$rss" 'BEGIN {printf "%.1f,%d\n", a - b, r}'
        sleep "$SAMPLE_S"
    done
) >"$OUT/rss.csv" &
sampler=$!

bench_rc=0
"$ACCEL" bench "$addr" --service m "$PHOTO" --protocol "$PROTOCOL" \
    --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 100 \
    --malformed "$MALFORMED" --check --interval "$INTERVAL" --json \
    >"$OUT/bench.json" || bench_rc=$?
sleep "$SAMPLE_S" # one more RSS sample after the load
alive=no
kill -0 "$pid" 2>/dev/null && alive=yes
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
sampler=

python3 - "$OUT" "$pid" "$alive" "$bench_rc" "$WARMUP_S" "$DURATION" <<'EOF' | tee "$OUT/summary.md"
import csv, json, statistics, sys
out, pid, alive, bench_rc, warmup_s, duration = sys.argv[1:]
warmup_s, duration = float(warmup_s), float(duration)
r = json.load(open(f"{out}/bench.json")) if bench_rc == "0" else None
rows = [(float(a["t_s"]), int(a["rss_kb"])) for a in csv.DictReader(open(f"{out}/rss.csv"))]
log = open(f"{out}/serve.log", errors="replace").read()
panics = log.count("panicked")
checks = []
def crit(name, ok, figure):
    checks.append(ok)
    print(f"| {name} | {figure} | {'pass' if ok else 'FAIL'} |")
print("| criterion | measured | |")
print("|---|---|---|")
crit("no crash", alive == "yes" and panics == 0 and bench_rc == "0",
     f"server pid {pid} alive: {alive}; panics in log: {panics}; bench exit {bench_rc}")
if r is None:
    sys.exit(1)
m, a = r["malformed"], r["answers"]
good = r["requests"] - m["sent"]
crit("good requests answered", r["errors"] == 0,
     f"{good} good requests, {r['errors']} errors {r['errors_by_status'] or ''}".strip())
crit("malformed refused as invalid", m["unexpected"] == 0 and m["sent"] > 0,
     f"{m['sent']} malformed ({m['sent'] / r['requests'] * 100:.2f} %), {m['refused']} refused, "
     f"{m['shed']} shed, {m['unexpected']} unexpected; by kind {m['by_kind']}")
crit("zero wrong answers", a["wrong"] == 0 and a["unreadable"] == 0 and a["checked"] > 0,
     f"{a['checked']} checked, {a['wrong']} wrong, {a['unreadable']} unreadable, top-1 {a['reference_top1']}")
base = next((x for x in rows if x[0] >= warmup_s), None)
end = rows[-1] if rows else None
if base and end and end[0] > base[0]:
    growth = (end[1] - base[1]) / base[1] * 100
    peak = max(k for _, k in rows)
    crit("RSS growth after warm-up <= 5 %", growth <= 5.0,
         f"{base[1] / 1024:.1f} MB at {base[0]:.0f} s -> {end[1] / 1024:.1f} MB at {end[0]:.0f} s "
         f"({growth:+.2f} %); peak {peak / 1024:.1f} MB; first sample {rows[0][1] / 1024:.1f} MB")
else:
    crit("RSS growth after warm-up <= 5 %", False, "not enough RSS samples after warm-up")
iv = [i for i in r["intervals"] if i["ok"] > 0]
# A partial last interval (the run's tail) has too few samples to judge.
if len(iv) > 1 and iv[-1]["start_s"] + 0.5 * (iv[1]["start_s"] - iv[0]["start_s"]) > duration:
    iv = iv[:-1]
p99 = [i["p99_ms"] for i in iv]
med = statistics.median(p99)
crit("p99 stable (each interval <= 1.5 x median)", max(p99) <= 1.5 * med,
     f"per-interval p99 {min(p99):.2f}-{max(p99):.2f} ms, median {med:.2f}, max/median {max(p99) / med:.2f}")
l = r["latency_ms"]
print()
print(f"{r['requests']} requests in {r['wall_s']:.0f} s ({r['throughput_rps']:.1f} good answers/s); "
      f"latency ms p50 {l['p50']:.2f} p90 {l['p90']:.2f} p99 {l['p99']:.2f} p99.9 {l['p999']:.2f} max {l['max']:.2f}")
print()
print("| interval s | requests | ok | malformed | errors | p50 ms | p99 ms |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for i in r["intervals"]:
    print(f"| {i['start_s']:.0f} | {i['requests']} | {i['ok']} | {i['malformed']} | {i['errors'] + i['shed']} | {i['p50_ms']:.2f} | {i['p99_ms']:.2f} |")
print()
print("| t s | RSS MB |")
print("|---:|---:|")
step = max(1, len(rows) // 12)
for t, k in rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else []):
    print(f"| {t:.0f} | {k / 1024:.1f} |")
print()
print("PASS" if all(checks) else "FAIL")
sys.exit(0 if all(checks) else 1)
EOF
