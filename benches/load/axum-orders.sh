#!/usr/bin/env bash
# Load benchmark of the reference service: the cost of palisade's layers over HTTP.
#
# Starts two release builds of examples/axum-orders side by side, one with every layer on and
# one with `--layers off` (the same handlers without any palisade layer), and drives both in
# alternating rounds, so both see the same machine:
#   - GET /orders/{id}: the server stack on a read (idempotency passes the GET through, the
#     outbox hook puts its context in and wakes nothing, the server bulkhead takes a permit);
#   - POST /orders replayed with one Idempotency-Key: with the layers on, every request after the
#     first is answered from the idempotency store; with them off, each one runs the handler,
#     which finds the order the first one made in the database and answers it (an insert that
#     changes nothing, the order's lease, a select) without charging again;
#   - POST /orders, each request a new order under a key of its own: the whole write path (the
#     order stored, charged through the payments client stack to the simulator, finished with its
#     event staged in one transaction), and with the layers on the idempotency layer's lock and
#     stored answer, and the outbox hook waking the relay at once (without it the relay polls
#     every second).
# The first two are driven by oha, which sends the same request every time; the third by wrk
# with benches/load/first-post.lua, which gives each request its own Idempotency-Key (build,
# round, thread, count) and counts the answers by status: the run fails when more than one in a
# thousand is not a 201 or fails on the socket.
# Prints requests per second and latency per route and build, the median over the rounds, and
# the ratio of the two builds.
#
# Settings (environment): DURATION (per run, default 10s), CONNECTIONS (default 16),
# ROUNDS (default 3), PORT (first of four ports, default 3400).
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-3400}
OHA_VERSION=1.16.0

if ! command -v oha >/dev/null; then
  cargo install --locked oha --version "$OHA_VERSION"
fi
if ! command -v wrk >/dev/null; then
  # Package lists may be missing on a fresh machine: fetched only when the install needs them.
  { apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; } >&2
fi
cargo build --release -p axum-orders
BIN="${CARGO_TARGET_DIR:-target}/release/axum-orders"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ORDER='{"customer_id":"c1","items":[{"product_id":"p1","quantity":2}],"total_amount":4200,"currency":"EUR"}'

# start NAME PORT LAYERS: the service on PORT, its payments simulator on PORT+1.
start() {
  "$BIN" --listen "127.0.0.1:$2" --payments-sim-listen "127.0.0.1:$(($2 + 1))" \
    --database-url "sqlite:$WORK/$1.db" --layers "$3" --idempotency-keys 1000000 >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$2/health" >/dev/null && return
    sleep 0.1
  done
  echo "axum-orders ($1) did not start:" >&2
  cat "$WORK/$1.log" >&2
  exit 1
}

start on "$PORT" on
start off "$((PORT + 2))" off

# create PORT KEY: one order, its id printed.
create() {
  curl -sf "http://127.0.0.1:$1/orders" -H 'content-type: application/json' \
    -H "Idempotency-Key: $2" -d "$ORDER" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}
# Per instance: the order the GET route reads, and the first request of the replayed key (so the
# load replays a completed request instead of racing it for the key's lock).
ID_ON=$(create "$PORT" load-get)
ID_OFF=$(create "$((PORT + 2))" load-get)
create "$PORT" load-replay >/dev/null
create "$((PORT + 2))" load-replay >/dev/null

# wrk splits the connections evenly over its threads: as many threads as cores that divide them.
WRK_THREADS=$(nproc)
while ((CONNECTIONS % WRK_THREADS)); do WRK_THREADS=$((WRK_THREADS - 1)); done

# run ROUTE BUILD PORT ID ROUND: one oha run, its JSON summary kept in $WORK; for the route
# `first`, one wrk run, its output kept there.
run() {
  if [ "$1" = first ]; then
    # The timeout is long so that every answer's latency is recorded: wrk counts one slower than
    # its timeout (2 s by default) as an error and leaves it out of the percentiles.
    FIRST_POST_KEY_PREFIX="first-$2-$5" ORDER_BODY="$ORDER" wrk -d "$DURATION" -c "$CONNECTIONS" \
      -t "$WRK_THREADS" --timeout 60s -s benches/load/first-post.lua "http://127.0.0.1:$3/orders" \
      >"$WORK/$1-$2-$5.txt"
    return
  fi
  local args=(-z "$DURATION" -w -c "$CONNECTIONS" --no-tui --output-format json)
  case "$1" in
    get) args+=("http://127.0.0.1:$3/orders/$4") ;;
    replay) args+=(-m POST -H 'content-type: application/json' -H 'Idempotency-Key: load-replay' -d "$ORDER"
      "http://127.0.0.1:$3/orders") ;;
  esac
  oha "${args[@]}" >"$WORK/$1-$2-$5.json"
}

for round in $(seq "$ROUNDS"); do
  for route in get replay first; do
    run "$route" on "$PORT" "$ID_ON" "$round"
    run "$route" off "$((PORT + 2))" "$ID_OFF" "$round"
  done
done

python3 - "$WORK" "$ROUNDS" "$DURATION" "$CONNECTIONS" <<'EOF'
import json, statistics, sys

work, rounds, duration, connections = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
routes = {"get": "GET /orders/{id}", "replay": "POST /orders, replayed key", "first": "POST /orders, new key"}
# First POSTs answered other than 201, or failed on the socket, allowed per request sent.
FIRST_POST_FAILURES = 0.001
# Per build, over all rounds: first POSTs failed and answered.
first_post_failures = {}


def oha(route, build, r):
    run = json.load(open(f"{work}/{route}-{build}-{r}.json"))
    codes = run["statusCodeDistribution"]
    bad = {code: n for code, n in codes.items() if not code.startswith("2")}
    if bad or run["errorDistribution"]:
        sys.exit(f"{route} ({build}): non-2xx answers {bad}, errors {run['errorDistribution']}")
    return {
        "rps": run["summary"]["requestsPerSec"],
        "p50": run["latencyPercentiles"]["p50"] * 1000,
        "p99": run["latencyPercentiles"]["p99"] * 1000,
    }


def wrk(route, build, r):
    text = open(f"{work}/{route}-{build}-{r}.txt").read()
    line = next((line for line in text.splitlines() if line.startswith("first-post: ")), None)
    if line is None:
        sys.exit(f"{route} ({build}, round {r}): wrk printed no figures:\n{text}")
    run = json.loads(line.removeprefix("first-post: "))
    failures = sum(n for code, n in run["statuses"].items() if code != "201") + sum(run["errors"].values())
    failed, answered = first_post_failures.get(build, (0, 0))
    first_post_failures[build] = (failed + failures, answered + run["requests"])
    if failures > FIRST_POST_FAILURES * max(run["requests"], 1):
        sys.exit(f"{route} ({build}, round {r}): {failures} of {run['requests']} first POSTs failed: "
                 f"answers by status {run['statuses']}, socket errors {run['errors']}")
    return {
        "rps": run["requests"] / (run["duration_us"] / 1e6),
        "p50": run["p50_us"] / 1000,
        "p99": run["p99_us"] / 1000,
    }


def load(route, build):
    runs = [(wrk if route == "first" else oha)(route, build, r) for r in range(1, rounds + 1)]
    return {key: statistics.median(run[key] for run in runs) for key in ("rps", "p50", "p99")}


# Every run is checked before anything is printed, so a failed one leaves no partial table.
results = {route: (load(route, "on"), load(route, "off")) for route in routes}
print(f"axum-orders under load (oha; wrk for new keys): {connections} connections, {duration} per run, "
      f"median of {rounds} rounds\n")
print("| route | layers | requests/s | p50 | p99 | on / off rps | p99 on − off |")
print("|---|---|---|---|---|---|---|")
for route, label in routes.items():
    on, off = results[route]
    for build, r in (("on", on), ("off", off)):
        extra = (f"{on['rps'] / off['rps']:.0%} | {on['p99'] - off['p99']:+.2f} ms" if build == "on" else " | ")
        print(f"| {label} | {build} | {r['rps']:,.0f} | {r['p50']:.2f} ms | {r['p99']:.2f} ms | {extra} |")
print("\nPOST /orders with new keys, answered other than 201 or failed on the socket, over all rounds: "
      + ", ".join(f"{build} {failed:,} of {answered:,}" for build, (failed, answered) in first_post_failures.items()))
EOF
