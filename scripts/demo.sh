#!/usr/bin/env bash
# Start (or stop) the demo: gateway (2 processes), worker, payment and SMS simulators, in the background under .run/.
# `make demo` runs services, migrate and seed first, then this script.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=.run
BIN=.venv/bin
HOST=${EXAMGATE_HOST:-127.0.0.1}
PORT=${EXAMGATE_PORT:-8080}
PAYSIM_PORT=${EXAMGATE_PAYSIM_PORT:-8090}
SMSSIM_PORT=${EXAMGATE_SMSSIM_PORT:-8091}
KEYS=${EXAMGATE_KEYS_DIR:-$RUN/keys}
# The simulator finishes its retry schedules 100x faster than the real providers in the demo.
export EXAMGATE_PAYSIM_TIME_SCALE=${EXAMGATE_PAYSIM_TIME_SCALE:-0.01}
export EXAMGATE_PAYSIM_URL=${EXAMGATE_PAYSIM_URL:-http://$HOST:$PAYSIM_PORT}
# The worker sends SMS to the simulator (same secrets file, so the same AccessKey secret).
export EXAMGATE_SMS_URL=${EXAMGATE_SMS_URL:-http://$HOST:$SMSSIM_PORT}
export EXAMGATE_PUBLIC_URL=${EXAMGATE_PUBLIC_URL:-http://$HOST:$PORT}
WORKERS=${DEMO_WORKERS:-2}
# Served on loopback only, the demo trusts X-Forwarded-For from loopback, so a local load test
# (make loadtest) is throttled per simulated candidate rather than as one address. Set
# EXAMGATE_TRUSTED_PROXIES= (empty) to turn it off, or to your proxy's address when serving wider.
if [[ $HOST == 127.0.0.1 ]]; then
    export EXAMGATE_TRUSTED_PROXIES=${EXAMGATE_TRUSTED_PROXIES-127.0.0.1}
fi
mkdir -p "$RUN"

say() { echo "demo: $*"; }

running() {  # running NAME → true when .run/NAME.pid names a live process
    local pidfile="$RUN/$1.pid"
    [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

start() {  # start NAME COMMAND…
    local name=$1; shift
    if running "$name"; then
        say "$name already running (pid $(cat "$RUN/$name.pid"))"
        return
    fi
    nohup "$@" >"$RUN/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN/$name.pid"
    say "started $name (pid $!, log $RUN/$name.log)"
}

stop() {  # stop NAME
    local name=$1 pidfile="$RUN/$1.pid"
    if running "$name"; then
        local pid
        pid=$(cat "$pidfile")
        kill -TERM "$pid"
        for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        say "stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
}

wait_ready() {
    local url="http://$HOST:$PORT/readyz"
    for _ in $(seq 1 300); do
        if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
        if ! running gateway; then break; fi
        sleep 0.1
    done
    say "the gateway did not become ready at $url; last lines of $RUN/gateway.log:"
    tail -n 30 "$RUN/gateway.log" >&2 || true
    curl -sS "$url" >&2 || true
    return 1
}

case "${1:-start}" in
    start)
        if ! running gateway && (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then
            say "port $PORT on $HOST is taken by another program; set EXAMGATE_PORT=… and try again" >&2
            exit 1
        fi
        if [[ ! -f $KEYS/alipay_app_private.pem ]]; then
            "$BIN/examgate" keys generate --dir "$KEYS" >/dev/null
            say "generated development payment keys in $KEYS"
        fi
        export EXAMGATE_KEYS_DIR=$KEYS
        start paysim "$BIN/examgate" paysim --host "$HOST" --port "$PAYSIM_PORT"
        start smssim "$BIN/examgate" smssim --host "$HOST" --port "$SMSSIM_PORT"
        start gateway "$BIN/examgate" serve --workers "$WORKERS" --host "$HOST" --port "$PORT"
        start worker "$BIN/examgate" worker
        wait_ready
        base="http://$HOST:$PORT"
        exams=$(curl -fsS "$base/api/v1/exams" | "$BIN/python" -c \
            'import sys, json; print("; ".join("%s %s %s" % (e["id"], e["code"], e["name"]) for e in json.load(sys.stdin)))')
        cat <<EOT

examgate demo is running.
  pages          $base/   (candidates: $base/register, /login, /tickets, /scores)
  console        $base/console   (operators; the admin token is in .run/secrets.json)
  gateway        $base  ($WORKERS processes)
  readiness      $base/readyz
  exams          $base/api/v1/exams   → $exams
  sites          $base/api/v1/exams/<id>/sites?province=11
  metrics        $base/metrics   (Authorization: Bearer <"metrics_token" in .run/secrets.json, or an admin token>)
  API contract   $base/api/v1/openapi.json
  payments       simulator at $EXAMGATE_PAYSIM_URL (pay pages /pay/<order_no>), keys in $KEYS
  refunds        .venv/bin/examgate ctl refunds
  SMS            simulator at $EXAMGATE_SMS_URL (codes sent: $EXAMGATE_SMS_URL/sim/messages?phone=<number>);
                 outbox: .venv/bin/examgate sms outbox
  admin token    in .run/secrets.json ("admin_tokens")
  logs           $RUN/gateway.log, $RUN/worker.log, $RUN/paysim.log, $RUN/smssim.log
  stop           make demo-stop
EOT
        ;;
    stop)
        stop worker
        stop gateway
        stop paysim
        stop smssim
        ;;
    status)
        for name in gateway worker paysim smssim; do
            if running "$name"; then say "$name running (pid $(cat "$RUN/$name.pid"))"; else say "$name stopped"; fi
        done
        ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
