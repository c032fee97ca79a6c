#!/usr/bin/env bash
# Overload (issue 8, item 3; run by hand, not in CI): one `accel serve`
# (ShuffleNetV2 int8 QDQ) with a short admission queue, then, back to back:
#   1. capacity C: closed loop, concurrency CAP_CONCURRENCY, CAP_S seconds;
#   2. unloaded: open loop at 0.3 x C for UNLOADED_S seconds -> p99_u;
#   3. overload: open loop at 3 x C for OVER_S seconds;
#   4. recovery: open loop at 0.3 x C for RECOVER_S seconds, at once.
# Pass: in 3, the excess is shed (RESOURCE_EXHAUSTED / 429) and fast (shed
# p99 <= the unloaded p50: a refusal, at its slowest, takes less time than a
# typical answer; or <= SHED_FAST_MS when set), no other errors, accepted
# p99 <= 2 x p99_u; in 4, no errors and p99 <= 2 x p99_u (the server
# recovers at once).
#
#   bench/overload.sh
#   QUEUE=4 bench/overload.sh         # room for 4 to wait
#
# Environment: ACCEL (default target/release/accel, built if missing),
# QUEUE (0), WORKERS (1), PREPROCESS (1), SERVE_ARGS (more `accel serve`
# flags), CAP_CONCURRENCY (WORKERS + PREPROCESS), CAP_S (20),
# UNLOADED_S (20), OVER_S (30), RECOVER_S (10), SHED_FAST_MS (unset), PROTOCOL
# (tfs-grpc), OUT (target/overload: one JSON per phase, serve.log,
# summary.md). Needs ONNX Runtime in target/accel-home/engines.
set -euo pipefail
cd "$(dirname "$0")/.."
ACCEL=${ACCEL:-target/release/accel}
QUEUE=${QUEUE:-0}
WORKERS=${WORKERS:-1}
PREPROCESS=${PREPROCESS:-1}
SERVE_ARGS=${SERVE_ARGS:-}
CAP_CONCURRENCY=${CAP_CONCURRENCY:-$((WORKERS + PREPROCESS))}
CAP_S=${CAP_S:-20}
UNLOADED_S=${UNLOADED_S:-20}
OVER_S=${OVER_S:-30}
RECOVER_S=${RECOVER_S:-10}
SHED_FAST_MS=${SHED_FAST_MS:-}
PROTOCOL=${PROTOCOL:-tfs-grpc}
OUT=${OUT:-target/overload}
# shellcheck source=bench/lib.sh
source bench/lib.sh

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT/serve.log" "$OUT/summary.md"
trap stop_server EXIT
make_home
serve_flags="--queue $QUEUE --workers $WORKERS --preprocess-workers $PREPROCESS $SERVE_ARGS"
# shellcheck disable=SC2086 # a list of flags
start_server "$OUT/serve.log" $serve_flags

bench() { "$ACCEL" bench "$addr" --service m "$PHOTO" --protocol "$PROTOCOL" --check --json "$@"; }
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }

echo "1. capacity: closed loop, concurrency $CAP_CONCURRENCY, $CAP_S s" >&2
bench --concurrency "$CAP_CONCURRENCY" --duration "$CAP_S" --warmup 50 >"$OUT/1-capacity.json"
C=$(field "$OUT/1-capacity.json" throughput_rps)
low=$(python3 -c "print(round(0.3 * $C, 1))")
high=$(python3 -c "print(round(3 * $C, 1))")
echo "   C = $C req/s; unloaded $low req/s, overload $high req/s" >&2
echo "2. unloaded: $low req/s, $UNLOADED_S s" >&2
bench --rate "$low" --concurrency 4 --duration "$UNLOADED_S" >"$OUT/2-unloaded.json"
echo "3. overload: $high req/s, $OVER_S s" >&2
bench --rate "$high" --concurrency 8 --duration "$OVER_S" --warmup 0 --interval 5 >"$OUT/3-overload.json"
echo "4. recovery: $low req/s, $RECOVER_S s" >&2
bench --rate "$low" --concurrency 4 --duration "$RECOVER_S" --warmup 0 --interval 1 >"$OUT/4-recovery.json"
alive=no
kill -0 "$pid" 2>/dev/null && alive=yes

python3 - "$OUT" "$alive" "$SHED_FAST_MS" "$serve_flags" <<'EOF' | tee "$OUT/summary.md"
import json, sys
out, alive, shed_fast_ms, flags = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
cap, un, ov, rec = (json.load(open(f"{out}/{n}.json")) for n in ("1-capacity", "2-unloaded", "3-overload", "4-recovery"))
p99_u = un["open_loop"]["accepted_latency_ms"]["p99"]
def p99(i):
    return "–" if i["p99_ms"] is None else f"{i['p99_ms']:.2f}"
print(f"`accel serve {flags.strip()}`; capacity C = {cap['throughput_rps']:.1f} req/s "
      f"(closed loop, concurrency {cap['concurrency']}, p50 {cap['latency_ms']['p50']:.2f} ms, p99 {cap['latency_ms']['p99']:.2f} ms, "
      f"errors {cap['errors_by_status'] or 0})")
print()
print("| phase | offered req/s | due | not sent | accepted | accepted req/s | shed | other errors | accepted p50 / p99 ms | shed p50 / p99 / max ms | send lag p99 ms | wrong answers |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, r in (("unloaded (0.3 C)", un), ("overload (3 C)", ov), ("recovery (0.3 C)", rec)):
    o = r["open_loop"]
    a, s = o["accepted_latency_ms"], o["shed_latency_ms"]
    shed = f"{s['p50']:.2f} / {s['p99']:.2f} / {s['max']:.2f}" if o["shed"] else "–"
    print(f"| {name} | {o['offered_rps']:.1f} | {o['scheduled']} | {o['client_dropped']} | {o['accepted']} | {o['accepted_rps']:.1f} | "
          f"{o['shed']} | {o['other_errors']} | {a['p50']:.2f} / {a['p99']:.2f} | {shed} | {o['send_lag_ms']['p99']:.2f} | {r['answers']['wrong']} |")
print()
checks = []
def crit(name, ok, figure):
    checks.append(ok)
    print(f"| {name} | {figure} | {'pass' if ok else 'FAIL'} |")
o, ro = ov["open_loop"], rec["open_loop"]
print("| criterion | measured | |")
print("|---|---|---|")
crit("overload: the excess is shed", o["shed"] > 0 and o["other_errors"] == 0 and o["client_dropped"] == 0,
     f"{o['shed']} of {o['scheduled']} shed ({o['shed'] / o['scheduled'] * 100:.0f} %), {o['other_errors']} other errors, {o['client_dropped']} not sent")
if shed_fast_ms:
    shed_bound, shed_name = float(shed_fast_ms), f"{float(shed_fast_ms):g} ms"
else:
    shed_bound = un["open_loop"]["accepted_latency_ms"]["p50"]
    shed_name = f"unloaded p50 {shed_bound:.2f} ms"
crit(f"shed fast (p99 <= {shed_name})", o["shed"] > 0 and o["shed_latency_ms"]["p99"] <= shed_bound,
     f"shed p50 {o['shed_latency_ms']['p50']:.2f} ms, p99 {o['shed_latency_ms']['p99']:.2f} ms")
crit("accepted p99 <= 2 x unloaded p99", o["accepted_latency_ms"]["p99"] <= 2 * p99_u,
     f"{o['accepted_latency_ms']['p99']:.2f} vs 2 x {p99_u:.2f} = {2 * p99_u:.2f} ms ({o['accepted_latency_ms']['p99'] / p99_u:.2f} x)")
crit("recovery: no errors, p99 <= 2 x unloaded p99", ro["shed"] + ro["other_errors"] == 0 and ro["accepted_latency_ms"]["p99"] <= 2 * p99_u,
     f"{ro['shed'] + ro['other_errors']} errors; p99 {ro['accepted_latency_ms']['p99']:.2f} ms ({ro['accepted_latency_ms']['p99'] / p99_u:.2f} x unloaded); "
     f"first second p99 {p99(rec['intervals'][0])} ms")
crit("no wrong answers, server alive", alive == "yes" and all(r["answers"]["wrong"] == 0 for r in (cap, un, ov, rec)),
     f"server alive: {alive}")
print()
print("overload, per 5 s: " + "; ".join(f"{i['start_s']:.0f} s: {i['ok']} ok {i['shed']} shed p99 {p99(i)}" for i in ov["intervals"]))
print()
print("PASS" if all(checks) else "FAIL")
sys.exit(0 if all(checks) else 1)
EOF
