#!/usr/bin/env bash
# Crash-safety loop (issue 8, item 4): kill -9 at random points during
# register, convert, image create, deploy and delete, then check that the
# registry is consistent.
#
#   bench/crash.sh [TRIALS]   (default 200; SEED=N to replay, default 1;
#                              BUILD=0 to skip `cargo build -p accel-cli`,
#                              ACCEL_BIN=PATH to test another binary)
#
# Each trial starts one operation in the background, sleeps a delay drawn
# uniformly from [0, 1.2 x that operation's normal duration] (measured once
# at the start), then SIGKILLs it in one of two ways, chosen at random:
#   proc   only the CLI process ("the user's process died"); detached
#          children (a convert worker, a supervisor and its server) live on
#          (deploy: the delay range is the CLI's own duration);
#   power  every process that runs with this ACCEL_HOME: the CLI, its
#          process group, detached convert workers, supervisors, servers
#          (closest to a power loss this side of the page cache; see
#          docs/RELIABILITY.md "Crash safety" for what it does not cover).
# After each trial:
#   - `accel registry check --json` must be clean. Dead operations and dead
#     image builds (a killed worker/builder) are crash leftovers the
#     registry records and repairs by design: they are counted, repaired with
#     `check --repair`, and check must then be clean. Orphan, missing or
#     corrupt blobs and stale temp files left after the automatic recovery
#     are failures.
#   - every model and succeeded image listed before the trial is still
#     listed, with the same sha256 / manifest digest (nothing lost);
#   - every 10th trial (and at the end): the latest version of each model
#     name loads and predicts, and every file under blobs/sha256 hashes to
#     its name (independently of check);
#   - deployments are deleted again (which must succeed), after which no
#     process runs with this ACCEL_HOME and deployments/ is empty.
# At the end: one byte of a model blob is flipped, and `accel predict` must
# fail naming that sha256, `accel registry check` must report it as corrupt.
# Exits non-zero on any failure. Replay a failing trial with the same SEED.
set -uo pipefail
export LC_ALL=C
set -m # background jobs get their own process group (pgid = pid)

TRIALS=${1:-200}
SEED=${SEED:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if [ "${BUILD:-1}" != 0 ]; then # BUILD=0: use the accel already built
    echo "== building accel (debug)"
    cargo build -q -p accel-cli || exit 1
fi
BIN=${ACCEL_BIN:-$ROOT/target/debug/accel} # ACCEL_BIN: another build
F32=$ROOT/fixtures/models/shufflenet-v2-12-f32.onnx
QDQ=$ROOT/fixtures/models/shufflenet-v2-12-qdq.onnx
LABELS=$ROOT/fixtures/labels/imagenet-simple-labels.json
PHOTO=$ROOT/fixtures/images/skimage_coffee.png

H=$(mktemp -d "${TMPDIR:-/tmp}/accel-crash.XXXXXX")
# Not exported: only accel processes carry it, which is how power mode
# finds them (see home_pids).
unset ACCEL_HOME ACCEL_TEST_CRASH_AT
if [ -d "$ROOT/target/accel-home/engines" ]; then
    ln -s "$ROOT/target/accel-home/engines" "$H/engines"
fi
WORK=$H.work
mkdir -p "$WORK"
LOG=$WORK/log
: >"$LOG"
echo "   ACCEL_HOME=$H  SEED=$SEED  TRIALS=$TRIALS  (trial output in $LOG)"

FAILURES=0
fail() {
    echo "FAIL trial ${TRIAL:-seed}: $*" | tee -a "$LOG"
    FAILURES=$((FAILURES + 1))
}

accel() { ACCEL_HOME=$H "$BIN" "$@"; }

now_ms() { date +%s%3N; }

# Processes (pids) whose environment has ACCEL_HOME=$H: every accel process
# this loop started, directly or detached (the script itself does not
# export it). One grep over all environ files: fast enough to run at the
# moment of a kill.
home_pids() {
    grep -lzxF "ACCEL_HOME=$H" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3
}

# Whether process $1 runs (exists and is not a zombie: an exited child of
# this shell stays one until `wait`).
cli_running() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    [ -n "$st" ] && [ "$st" != Z ]
}

# "Power loss": freeze the CLI's process group, then every process of this
# home (SIGSTOP, repeated until no new one appears, so that nothing moves
# on or spawns meanwhile), then SIGKILL them all. Sets HIT=1 when anything
# was running.
power_kill() {
    local group=$1 round pids all=""
    HIT=0 CLI_RAN=0
    cli_running "$group" && HIT=1 CLI_RAN=1
    kill -STOP -- "-$group" 2>/dev/null
    for round in 1 2 3; do
        pids=$(home_pids)
        [ -n "$pids" ] || break
        HIT=1
        kill -STOP $pids 2>/dev/null
        all="$all $pids"
    done
    kill -KILL -- "-$group" 2>/dev/null
    [ -z "$all" ] || kill -KILL $all 2>/dev/null
    sleep 0.05
    pids=$(home_pids) # none is expected
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null
}

# A model file whose bytes differ from every other trial's: the qdq model
# with an unknown protobuf field (number 1000, length-delimited) appended,
# which ONNX parsers skip. Exercises the new-blob path, not only dedup.
unique_model() {
    local out=$WORK/unique-$1.onnx tag="trial-$1"
    cp "$QDQ" "$out"
    printf '\xc2\x3e' >>"$out"
    printf "\\x$(printf %02x ${#tag})" >>"$out"
    printf '%s' "$tag" >>"$out"
    echo "$out"
}

# R = a number in [0, $1] from a 64-bit LCG seeded by SEED (not $RANDOM:
# bash reseeds it in every subshell). Call it in this shell, not in $(…).
STATE=$SEED
rand() {
    STATE=$(((STATE * 6364136223846793005 + 1442695040888963407) & 0x7fffffffffffffff))
    R=$(((STATE >> 24) % ($1 + 1)))
}

# Commands per operation; $1 = trial number.
cmd_register() {
    if (($1 % 2)); then
        echo models register shuffle "$(unique_model "$1")" --preset torchvision --labels "$LABELS"
    else
        echo models register shuffle-f32 "$F32" --preset torchvision --labels "$LABELS"
    fi
}
CONVERT_ARGS="convert shuffle-f32 --precision fp32 --threads 1 --min-time-ms 20 --engine onnxruntime"
cmd_convert() { echo "$CONVERT_ARGS"; }
cmd_convert_nowait() { echo "$CONVERT_ARGS --no-wait"; }
cmd_image() { echo images create img --model shuffle:1; }
cmd_deploy() { echo services deploy "dep$1" --image img:1 --target local; }
cmd_delete() { echo services delete "dep$1"; }

# Waits for the running operations of this home to end (a convert worker
# that outlived its CLI in `proc` mode).
wait_operations() {
    local id
    for id in $(accel operations list --json 2>/dev/null |
        jq -r '.[] | select(.status == "running") | .id'); do
        accel operations wait "$id" >/dev/null 2>&1
    done
}

deployments_cleanup() {
    local d
    for d in $(accel services list --json 2>/dev/null | jq -r '.[].name'); do
        if ! accel services delete "$d" >>"$LOG" 2>&1; then
            fail "services delete $d (after the kill) failed"
        fi
    done
    local left
    left=$(ls -A "$H/deployments" 2>/dev/null)
    if [ -n "$left" ]; then
        fail "deployments/ holds directories without a record: $left"
        rm -rf "${H:?}/deployments/"* # reported once, not in every later trial
    fi
    sleep 0.1
    left=$(home_pids)
    if [ -n "$left" ]; then
        fail "processes of this home survive the clean-up: $(for p in $left; do tr '\0' ' ' </proc/$p/cmdline; echo; done)"
        for p in $left; do kill -9 "$p" 2>/dev/null; done
    fi
}

snapshot() { # name:version sha256 of models; name:version digest of succeeded images
    {
        accel models list --json | jq -r '.[] | "\(.name):\(.version) \(.sha256)"'
        accel images list --json | jq -r '.[] | select(.state == "succeeded") | "image \(.name):\(.version) \(.manifest_digest)"'
    } | sort
}

verify_blob_names() {
    local f bad=0
    for f in "$H"/blobs/sha256/*; do
        [ -e "$f" ] || continue
        if [ "$(sha256sum <"$f" | cut -d' ' -f1)" != "$(basename "$f")" ]; then
            fail "blob file $(basename "$f") does not hash to its name"
            bad=1
        fi
    done
    return $bad
}

verify_loads() {
    local ref
    for ref in $(accel models list --json | jq -r 'group_by(.name)[] | max_by(.version) | "\(.name):\(.version)"'); do
        if ! accel predict "$ref" "$PHOTO" >/dev/null 2>>"$LOG"; then
            fail "predict $ref failed"
        fi
    done
}

REPAIRED=0
RECOVERED=0
declare -A REPAIR_STATES
check_registry() {
    local out
    out=$(accel registry check --json 2>>"$LOG")
    echo "check: $out" >>"$LOG"
    if [ -z "$out" ]; then
        fail "registry check printed nothing"
        return
    fi
    RECOVERED=$((RECOVERED + $(jq -r '.recovered | length' <<<"$out")))
    local bad dead
    bad=$(jq -r '[.orphan_blobs, .missing_blobs, .corrupt_blobs, .stale_temp_files] | map(length) | add' <<<"$out")
    dead=$(jq -r '(.dead_operations | length) + (.dead_image_builds | length)' <<<"$out")
    if [ "$bad" != 0 ]; then
        fail "check found orphan/missing/corrupt blobs or stale temp files: $out"
    fi
    if [ "$dead" != 0 ]; then
        REPAIRED=$((REPAIRED + 1))
        local k
        for k in $(jq -r '(if (.dead_operations|length) > 0 then ["dead_operations"] else [] end) + (if (.dead_image_builds|length) > 0 then ["dead_image_builds"] else [] end) | .[]' <<<"$out"); do
            REPAIR_STATES[$k]=$((${REPAIR_STATES[$k]:-0} + 1))
        done
    fi
    if [ "$bad" != 0 ] || [ "$dead" != 0 ]; then
        accel registry check --repair --json >>"$LOG" 2>&1
        out=$(accel registry check --json 2>>"$LOG")
        if [ "$(jq -r '[.orphan_blobs, .missing_blobs, .corrupt_blobs, .stale_temp_files, .dead_operations, .dead_image_builds] | map(length) | add' <<<"$out")" != 0 ]; then
            fail "check after --repair is not clean: $out"
        fi
    fi
}

# ---- seed --------------------------------------------------------------
echo "== seeding"
accel models register shuffle "$QDQ" --preset torchvision --labels "$LABELS" >/dev/null || exit 1
accel models register shuffle-f32 "$F32" --preset torchvision --labels "$LABELS" >/dev/null || exit 1
accel images create img --model shuffle:1 >/dev/null || exit 1

# ---- measure -------------------------------------------------------------
declare -A DUR
measure() { # name, then the accel arguments
    local name=$1 t0
    shift
    t0=$(now_ms)
    accel "$@" >/dev/null 2>>"$LOG" || { echo "measuring $name failed: accel $*"; exit 1; }
    DUR[$name]=$(($(now_ms) - t0))
}
echo "== measuring each operation once"
measure register $(cmd_register 100001)
measure register_dedup $(cmd_register 0)
((DUR[register] < DUR[register_dedup])) && DUR[register]=${DUR[register_dedup]}
measure convert $(cmd_convert)
t0=$(now_ms)
accel $(cmd_convert_nowait) >/dev/null || exit 1
wait_operations
DUR[convert_nowait]=$(($(now_ms) - t0))
measure image $(cmd_image)
t0=$(now_ms)
accel $(cmd_deploy 0) >/dev/null || exit 1
DUR[deploy_cli]=$(($(now_ms) - t0)) # the CLI alone: proc-mode deploy kills
accel services wait dep0 >/dev/null 2>&1 || { echo "dep0 never became ready"; exit 1; }
DUR[deploy]=$(($(now_ms) - t0))
t0=$(now_ms)
accel $(cmd_delete 0) >/dev/null || exit 1
DUR[delete]=$(($(now_ms) - t0))
for k in register convert convert_nowait image deploy_cli deploy delete; do
    printf '   %-15s %6d ms  -> kill delay in [0, %d] ms\n' "$k" "${DUR[$k]}" $((DUR[$k] * 12 / 10))
done
check_registry

# ---- loop ----------------------------------------------------------------
OPS=(register convert convert_nowait image deploy delete)
declare -A COUNT HIT MINDELAY MAXDELAY MODES DEPSTATES
RECOVERED=0
START=$(now_ms)
for ((TRIAL = 1; TRIAL <= TRIALS; TRIAL++)); do
    rand $((${#OPS[@]} - 1))
    op=${OPS[$R]}
    rand 1
    mode=$( ((R == 0)) && echo proc || echo power)
    # A no-wait convert's CLI only starts the worker: killing only it is
    # the same as the plain convert trials; kill the worker (power).
    [ "$op" = convert_nowait ] && mode=power
    max=$((DUR[$op] * 12 / 10))
    # killing only the deploy CLI after it returned hits nothing: its range
    # is the CLI's own duration (power mode: until the server is ready)
    [ "$op.$mode" = deploy.proc ] && max=$((DUR[deploy_cli] * 12 / 10))
    rand 1000 # a fraction of the range: replays the same point on another machine
    delay=$((R * max / 1000))
    before=$(snapshot)
    if [ "$op" = delete ]; then # the deployment to delete, up and running
        accel $(cmd_deploy "$TRIAL") >/dev/null 2>>"$LOG" || fail "deploy before delete failed"
        accel services wait "dep$TRIAL" >/dev/null 2>&1 || fail "dep$TRIAL never became ready"
    fi
    args=$(cmd_"$op" "$TRIAL")
    echo "trial $TRIAL: $op mode=$mode delay=${delay}ms: accel $args" >>"$LOG"
    ACCEL_HOME=$H "$BIN" $args >>"$LOG" 2>&1 & # the binary itself: $! is its pid
    pid=$!
    sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
    alive=0
    if [ "$mode" = proc ]; then
        cli_running "$pid" && alive=1
        kill -KILL "$pid" 2>/dev/null
    else
        # a hit when the CLI or a process it started (convert worker,
        # supervisor, server) was running; in a delete trial the deployment's
        # processes always are, so only the CLI counts there
        power_kill "$pid"
        alive=$HIT
        [ "$op" = delete ] && alive=$CLI_RAN
    fi
    wait "$pid" 2>/dev/null
    # In proc mode a detached convert worker or supervisor may live on; the
    # check below runs alongside them, as a user's would.
    COUNT[$op]=$((${COUNT[$op]:-0} + 1))
    HIT[$op]=$((${HIT[$op]:-0} + alive))
    MODES[$op.$mode]=$((${MODES[$op.$mode]:-0} + 1))
    if [ -z "${MINDELAY[$op]:-}" ] || ((delay < MINDELAY[$op])); then MINDELAY[$op]=$delay; fi
    if [ -z "${MAXDELAY[$op]:-}" ] || ((delay > MAXDELAY[$op])); then MAXDELAY[$op]=$delay; fi
    fails_before=$FAILURES
    check_registry
    wait_operations
    for st in $(accel services list --json 2>/dev/null |
        jq -r '.[] | "\(.state)/\(if .supervisor_alive then "supervised" else "unsupervised" end)"'); do
        DEPSTATES[$op.$mode:$st]=$((${DEPSTATES[$op.$mode:$st]:-0} + 1))
    done
    deployments_cleanup
    check_registry
    after=$(snapshot)
    lost=$(comm -23 <(echo "$before") <(echo "$after"))
    [ -z "$lost" ] || fail "lost or changed after the kill: $lost"
    if ((TRIAL % 10 == 0)); then
        verify_blob_names
        verify_loads
    fi
    status=ok
    ((FAILURES > fails_before)) && status=FAIL
    printf 'trial %3d %-15s %-5s delay %5d ms %s %s\n' "$TRIAL" "$op" "$mode" "$delay" \
        "$([ $alive = 1 ] && echo killed || echo 'exited ')" "$status"
done
ELAPSED=$((($(now_ms) - START) / 1000))

verify_blob_names
verify_loads

# ---- a corrupted blob -------------------------------------------------------
echo "== corrupted blob"
sha=$(accel models show shuffle:1 --json | jq -r .sha256)
blob=$H/blobs/sha256/$sha
chmod u+w "$blob" 2>/dev/null
size=$(stat -c %s "$blob")
off=$((size / 2))
byte=$(dd if="$blob" bs=1 skip=$off count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
printf "\\x$(printf %02x $((byte ^ 0x40)))" | dd of="$blob" bs=1 seek=$off conv=notrunc 2>/dev/null
err=$(accel predict shuffle:1 "$PHOTO" 2>&1 >/dev/null)
rc=$?
echo "   predict shuffle:1 -> rc=$rc: $err"
if [ $rc = 0 ] || ! grep -q "blob $sha is corrupt" <<<"$err"; then
    fail "predict of a corrupted blob did not fail naming its sha256"
fi
out=$(accel registry check --json 2>/dev/null)
if [ "$(jq -r --arg s "$sha" '.corrupt_blobs == [$s]' <<<"$out")" != true ]; then
    fail "check did not report exactly $sha as corrupt: $out"
fi
accel registry check >/dev/null 2>&1 && fail "check exits 0 with a corrupt blob"

# ---- summary -----------------------------------------------------------------
echo
echo "== summary: $TRIALS trials in ${ELAPSED}s, SEED=$SEED"
printf '   %-15s %6s %6s %6s %6s  %s\n' op trials killed proc power "delay range (ms)"
for k in "${OPS[@]}"; do
    printf '   %-15s %6d %6d %6d %6d  [%s, %s] of [0, %d]\n' "$k" "${COUNT[$k]:-0}" "${HIT[$k]:-0}" \
        "${MODES[$k.proc]:-0}" "${MODES[$k.power]:-0}" "${MINDELAY[$k]:--}" "${MAXDELAY[$k]:--}" \
        $((DUR[$k] * 12 / 10))
done
echo "   deploy in proc mode: delays drawn in [0, $((DUR[deploy_cli] * 12 / 10))] (the CLI alone)"
echo "   killed = the CLI (or, power mode, a worker/supervisor/server it started) was running at the kill; the rest ran to completion"
echo "   trials whose check needed --repair: $REPAIRED ($(for k in "${!REPAIR_STATES[@]}"; do printf '%s=%s ' "$k" "${REPAIR_STATES[$k]}"; done))"
echo "   deployment states seen after the kill (trial op.mode:state/supervisor), then deleted:"
for k in $(printf '%s\n' "${!DEPSTATES[@]}" | sort); do echo "     $k ${DEPSTATES[$k]}"; done
echo "   recovery actions reported by check (rolled-back registrations, temp files): $RECOVERED"
echo "   models: $(accel models list --json | jq length), images: $(accel images list --json | jq length), blobs: $(ls "$H/blobs/sha256" | wc -l)"
echo "   failures: $FAILURES"
if ((FAILURES == 0)); then
    rm -rf "$H" "$WORK"
    echo "PASS"
else
    echo "FAIL (home kept: $H; log: $LOG)"
    exit 1
fi
