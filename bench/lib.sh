# Shared by bench/soak.sh and bench/overload.sh (sourced, not run): a
# throw-away ACCEL_HOME with the ShuffleNetV2 int8 model registered as `m`,
# and one `accel serve` on free ports.
#
#   source bench/lib.sh
#   make_home                      # exports ACCEL_HOME; registers m
#   start_server LOG [FLAGS...]    # sets pid, addr (for $PROTOCOL)
#   stop_server                    # kills it, removes ACCEL_HOME
#
# Needs ACCEL (the binary) and PROTOCOL set, and ONNX Runtime in
# target/accel-home/engines (scripts/test provisions it).
MODEL=fixtures/models/shufflenet-v2-12-qdq.onnx
PHOTO=fixtures/images/sklearn_china.jpg
pid=

make_home() {
    [[ -x $ACCEL ]] || cargo build --release -p accel-cli
    ACCEL_HOME=$(mktemp -d)
    export ACCEL_HOME
    ln -s "$PWD/target/accel-home/engines" "$ACCEL_HOME/engines"
    "$ACCEL" models register m "$MODEL" --preset torchvision >/dev/null
}

start_server() {
    local log=$1
    shift
    "$ACCEL" serve --model m --grpc-port 0 --http-port 0 "$@" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
        grep -q '^ready' "$log" && break
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
        sleep 0.1
    done
    local ready
    ready=$(grep -m1 '^ready' "$log") || { echo "no ready line" >&2; exit 1; }
    case $PROTOCOL in
        *-grpc) addr=$(grep -o 'grpc=[^ ]*' <<<"$ready" | cut -d= -f2) ;;
        *) addr=$(grep -o 'http=[^ ]*' <<<"$ready" | cut -d= -f2) ;;
    esac
    echo "accel serve $* (pid $pid): $ready" >&2
}

stop_server() {
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    fi
    [[ -n ${ACCEL_HOME:-} ]] && rm -rf "$ACCEL_HOME"
}
