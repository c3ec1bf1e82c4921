"""Plots the key panels of grafana-dashboard.json from Prometheus's HTTP API.

    python3 observability/panels.py PROMETHEUS_URL START END OUT.png
"""
import json
import sys
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

url, start, end, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


def series(expr, legend):
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 2})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{query}") as res:
        result = json.load(res)["data"]["result"]
    for s in result:
        xs = [float(t) - start for t, _ in s["values"]]
        ys = [float(v) if v not in ("NaN", "+Inf") else float("nan") for _, v in s["values"]]
        yield legend.format(**s["metric"]), xs, ys


panels = [
    ("Breaker state (payments)", "", [
        ('max by (state) (palisade_circuit_breaker_state{name="payments"})', "{state}")]),
    ("Breaker calls by outcome (/s)", "calls/s", [
        ('sum by (outcome) (rate(palisade_circuit_breaker_calls_total{name="payments"}[10s]))', "{outcome}")]),
    ("p99 durations (s)", "seconds", [
        ('histogram_quantile(0.99, sum by (le) (rate(palisade_circuit_breaker_call_duration_seconds_bucket[10s])))', "breaker call"),
        ('histogram_quantile(0.99, sum by (le) (rate(palisade_retry_attempt_duration_seconds_bucket[10s])))', "retry attempt"),
        ('histogram_quantile(0.99, sum by (le) (rate(palisade_idempotency_store_duration_seconds_bucket[10s])))', "idempotency store"),
        ('histogram_quantile(0.99, sum by (le) (rate(palisade_outbox_publish_lag_seconds_bucket[10s])))', "outbox commit-to-publish")]),
    ("Bulkheads in flight, retries (/s)", "", [
        ('sum by (name) (palisade_bulkhead_in_flight)', "in flight: {name}"),
        ('sum by (reason) (rate(palisade_retry_retries_total[10s]))', "retries: {reason}")]),
]
fig, axes = plt.subplots(len(panels), 1, figsize=(9, 10), sharex=True, dpi=80)
for ax, (title, unit, queries) in zip(axes, panels):
    for expr, legend in queries:
        for name, xs, ys in series(expr, legend):
            if any(y == y and y != 0 for y in ys) or "state" in title:
                ax.plot(xs, ys, label=name, linewidth=1.2)
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", ncol=3)
axes[-1].set_xlabel("seconds into the load run: healthy, payments down (30 s), repaired and slower (60 s), normal (100 s)", fontsize=8)
fig.tight_layout()
fig.savefig(out)
print(f"wrote {out}")
