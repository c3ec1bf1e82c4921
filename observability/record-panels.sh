#!/usr/bin/env bash
# Makes observability/panels.png: Prometheus (Debian's package) scrapes the
# reference service every second during a two-minute load run that breaks
# and repairs its payments dependency, then panels.py plots the key series of
# the dashboard from Prometheus's HTTP API (Grafana itself is not needed).
#
#   bash observability/record-panels.sh     # needs prometheus (Debian) and matplotlib (pip install matplotlib)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build -q -p axum-orders
bin="${CARGO_TARGET_DIR:-target}/debug/axum-orders"
"$bin" --listen 127.0.0.1:39300 --payments-sim-listen 127.0.0.1:39301 \
    --database-url "sqlite:$work/orders.db" >"$work/orders.log" 2>&1 & echo $! >"$work/orders.pid"
cat >"$work/prometheus.yml" <<YML
global: { scrape_interval: 1s, evaluation_interval: 1s }
rule_files: [ "$PWD/observability/alerts.yml" ]
scrape_configs:
  - job_name: axum-orders
    static_configs: [ { targets: [ "127.0.0.1:39300" ] } ]
YML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address=127.0.0.1:39090 >"$work/prometheus.log" 2>&1 & echo $! >"$work/prometheus.pid"
sleep 3
start=$(date +%s)
ORDER='{"customer_id":"c1","items":[{"product_id":"p1","quantity":2}],"total_amount":4200,"currency":"EUR"}'
mode() { curl -s -X PUT 127.0.0.1:39301/mode -H 'content-type: application/json' -d "$1" >/dev/null; }
load() { # load SECONDS: 10 orders a second, 4 at a time
    local until=$(( $(date +%s) + $1 ))
    while [ "$(date +%s)" -lt "$until" ]; do
        seq 10 | xargs -P 4 -I{} curl -s -o /dev/null 127.0.0.1:39300/orders -H 'content-type: application/json' \
            -H "Idempotency-Key: load-$RANDOM-$RANDOM-{}" -d "$ORDER"
        sleep 0.5
    done
}
mode '{"failure_rate":0.0,"latency_ms":20,"status":503}'; load 30      # healthy
mode '{"failure_rate":1.0,"latency_ms":20,"status":503}'; load 30      # payments down: the breaker opens
mode '{"failure_rate":0.0,"latency_ms":150,"status":503}'; load 40     # repaired, slower: it half-opens and closes
mode '{"failure_rate":0.0,"latency_ms":20,"status":503}'; load 20
end=$(date +%s)
python3 observability/panels.py http://127.0.0.1:39090 "$start" "$end" observability/panels.png
