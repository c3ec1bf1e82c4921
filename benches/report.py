#!/usr/bin/env python3
"""Runs palisade's benchmarks and writes their figures into benches/REPORT.md.

    python3 benches/report.py                       # every bench, then the report
    python3 benches/report.py --bench retry         # some benches only (repeatable)
    python3 benches/report.py --load                # also the HTTP load benchmark
    python3 benches/report.py -- --sample-size 200  # arguments for criterion
    python3 benches/report.py --render RUN_DIR      # the report of a run again

A run gets a directory of its own, $CARGO_TARGET_DIR/palisade-bench/<run id>/,
holding criterion's output (CRITERION_HOME), the figures the benches record
themselves (PALISADE_BENCH_RESULTS, JSON lines), each bench's printed output and
run.json (date, machine, load, code). The report is rendered from that directory
alone, so nothing from another run or another checkout gets in. The run's section
goes above the previous runs in REPORT.md; rendering the same run again replaces
its section. Python 3 standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "benches" / "REPORT.md"
RUNS_MARKER = "<!-- runs below: newest first -->"
RUN_MARKER = re.compile(r"^<!-- run: (\S+) -->$", re.M)
LOAD_SCRIPT = ROOT / "benches" / "load" / "axum-orders.sh"

# Entries every `Harness` group measures first (benches/src/lib.rs).
BARE = "bare"
CONCURRENCY_LIMIT = "tower_concurrency_limit"
TWO_THREADS = "/2_threads"
# Groups outside the harness whose entries are measured against one of their own.
REFERENCES = {"idempotency_redis": "redis_get/sequential"}


# ---------------------------------------------------------------- running


def target_dir():
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"])
    meta = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return Path(json.loads(meta.stdout)["target_directory"])


def bench_names():
    """The [[bench]] targets of benches/Cargo.toml, in file order."""
    manifest = (ROOT / "benches" / "Cargo.toml").read_text()
    return re.findall(r'\[\[bench\]\]\s*\nname\s*=\s*"([^"]+)"', manifest)


def load_average():
    return round(os.getloadavg()[0], 2)


def machine():
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
    }


def command_output(*args):
    try:
        return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def run(args):
    benches = args.bench or bench_names()
    unknown = sorted(set(benches) - set(bench_names()))
    if unknown:
        sys.exit(f"no such bench: {', '.join(unknown)}")
    started = datetime.datetime.now(datetime.timezone.utc)
    run_id = started.strftime("%Y-%m-%dT%H%M%SZ")
    run_dir = target_dir() / "palisade-bench" / run_id
    run_dir.mkdir(parents=True)
    env = dict(os.environ, CRITERION_HOME=str(run_dir / "criterion"),
               PALISADE_BENCH_RESULTS=str(run_dir / "results.jsonl"))
    cargo = ["cargo", "bench", "-p", "palisade-benches"]
    targets = [a for name in benches for a in ("--bench", name)]

    print(f"==> building {', '.join(benches)}", flush=True)
    subprocess.run(cargo + targets + ["--no-run"], cwd=ROOT, env=env, check=True)

    dirty = command_output("git", "status", "--porcelain", "--untracked-files=no")
    meta = {
        "id": run_id,
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "load_at_start": load_average(),
        "commit": command_output("git", "rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(dirty),
        "rustc": command_output("rustc", "--version"),
        "criterion_args": args.criterion_args,
        "command": " ".join(["python3", "benches/report.py", *sys.argv[1:]]),
        "benches": [],
    }
    failed = []
    for name in benches:
        load = load_average()
        print(f"==> {name} (1-minute load average {load})", flush=True)
        log = run_dir / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(cargo + ["--bench", name, "--"] + args.criterion_args, cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in proc.stdout:
                sys.stdout.write(line)
                out.write(line)
            status = proc.wait()
        meta["benches"].append({"name": name, "load_at_start": load, "status": status})
        if status != 0:
            failed.append(name)
    if args.load:
        load = load_average()
        print(f"==> load benchmark (1-minute load average {load})", flush=True)
        proc = subprocess.run(["bash", str(LOAD_SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True)
        (run_dir / "load.txt").write_text(proc.stdout)
        sys.stderr.write(proc.stderr)
        meta["load_benchmark"] = {"load_at_start": load, "status": proc.returncode}
        if proc.returncode != 0:
            failed.append("load")
    meta["load_at_end"] = load_average()
    meta["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"==> run recorded in {run_dir}")
    return run_dir, failed


# ---------------------------------------------------------------- reading


def read_criterion(run_dir):
    """{group: {entry: {"ns", "low", "high", "throughput"}}} from criterion's `new` estimates."""
    groups = {}
    for bench in sorted((run_dir / "criterion").glob("**/new/benchmark.json")):
        info = json.loads(bench.read_text())
        estimates = json.loads((bench.parent / "estimates.json").read_text())
        typical = estimates.get("slope") or estimates["mean"]  # what criterion prints as `time`
        groups.setdefault(info["group_id"], {})[info["function_id"]] = {
            "ns": typical["point_estimate"],
            "low": typical["confidence_interval"]["lower_bound"],
            "high": typical["confidence_interval"]["upper_bound"],
            "throughput": info.get("throughput"),
        }
    return groups


def read_records(run_dir):
    path = run_dir / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- formatting


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def fmt_ms(ms):
    return fmt_time(ms * 1e6)


def fmt_delta(ns):
    return ("+" if ns >= 0 else "−") + fmt_time(abs(ns))


def fmt_rate(per_s, unit):
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_s >= scale:
            return f"{per_s / scale:.3g} {prefix}{unit}/s"
    return f"{per_s:.3g} {unit}/s"


def fmt_bytes_rate(per_s):
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if per_s >= scale:
            return f"{per_s / scale:.3g} {unit}/s"
    return f"{per_s:.3g} B/s"


def fmt_ratio(x):
    return f"{x:.2f}×".replace("-", "−")


def fmt_allocations(n):
    return f"{n:g}" if n == int(n) else f"{n:.2f}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def per_second(entry):
    return 1e9 / entry["ns"]


# ---------------------------------------------------------------- sections


def baseline_of(name, entries):
    """An HTTP entry is measured against the `http_bare*` entry whose suffix it
    shares (the longest), any other entry against the bare service."""
    if name == BARE or name.startswith("tower_"):
        return BARE
    candidates = [ref for ref in entries if ref.startswith("http_bare") and name.endswith(ref[len("http_bare"):])]
    return max(candidates, key=len) if candidates and name not in candidates else BARE


def harness_group(group, entries, allocations):
    order = [e for e in allocations if e in entries]
    order += sorted(e for e in entries if e not in order and not e.endswith(TWO_THREADS))
    bare, limit = entries[BARE]["ns"], entries[CONCURRENCY_LIMIT]["ns"]
    limit_2t = entries.get(CONCURRENCY_LIMIT + TWO_THREADS)
    rows = []
    for name in order:
        e = entries[name]
        base = baseline_of(name, entries)
        over = e["ns"] - entries[base]["ns"]
        measured = base == BARE and name != BARE and not name.startswith("http_bare")
        ratio = fmt_ratio(over / (limit - bare)) if measured and limit > bare else ""
        alloc = allocations.get(name)
        alloc_text = "" if alloc is None else fmt_allocations(alloc)
        if alloc is not None and base != BARE and base in allocations:
            alloc_text += f" ({'+' if alloc >= allocations[base] else '−'}{fmt_allocations(abs(alloc - allocations[base]))})"
        two = entries.get(name + TWO_THREADS)
        two_text = fmt_rate(per_second(two), " calls") if two else ""
        two_ratio = fmt_ratio(per_second(two) / per_second(limit_2t)) if two and limit_2t else ""
        rows.append([
            f"`{name}`", fmt_time(e["ns"]), "" if name == base else f"`{base}`",
            "" if name == base else fmt_delta(over), ratio, alloc_text, two_text, two_ratio,
        ])
    header = ["entry", "time per call", "against", "over it", "overhead ÷ `ConcurrencyLimit`'s",
              "allocations per call", "2 threads", "÷ `ConcurrencyLimit` on 2 threads"]
    return (f"### {group}\n\nOne call driven to completion on the bench thread; \"over it\" is the time per call "
            "minus that of the entry it is measured against, in the same run.\n\n" + table(header, rows))


def webhook_groups(groups, records):
    ratios = {(r["group"], r["case"]): r["ratio"] for r in records if r["kind"] == "paired_ratio"}
    rows = []
    names = sorted((g for g in groups if g.startswith("webhook_verify/")), key=lambda g: groups[g]["raw_hmac"]["ns"])
    for group in names:
        e = groups[group]
        size = (e["raw_hmac"]["throughput"] or {}).get("Bytes")
        rate = (lambda x: ", " + fmt_bytes_rate(size * per_second(x))) if size else (lambda x: "")
        raw, layer, handler = e["raw_hmac"]["ns"], e["layer"]["ns"], e["handler_alone"]["ns"]
        rows.append([
            group.split("/", 1)[1],
            fmt_time(raw) + rate(e["raw_hmac"]),
            fmt_time(e["verifier"]["ns"]) + rate(e["verifier"]) + f" ({fmt_ratio(e['verifier']['ns'] / raw)})",
            fmt_time(layer) + rate(e["layer"]) + f" ({fmt_time(handler)})",
            fmt_ratio((layer - handler) / raw),
            " / ".join(fmt_ratio(ratios[(group, case)]) if (group, case) in ratios else "—"
                       for case in ("fresh request", "request with extensions")),
        ])
    header = ["body", "raw HMAC-SHA256 (reference)", "`Verifier::verify` (÷ raw)", "whole layer (handler alone)",
              "verify path ÷ raw, criterion", "verify path ÷ raw, paired rounds: plain request / with extensions"]
    return ("### webhook_verify\n\nThe verify path is the layer minus the same handler without it. The paired "
            "ratios time raw HMAC, layer and handler back to back, round after round, and take the median.\n\n"
            + table(header, rows))


def plain_group(group, entries):
    reference = REFERENCES.get(group)
    rows = []
    for name in sorted(entries, key=lambda n: (n != reference, n)):
        e = entries[name]
        kind = (e["throughput"] or {})
        rate = fmt_bytes_rate(kind["Bytes"] * per_second(e)) if "Bytes" in kind else fmt_rate(per_second(e), " calls")
        ratio = fmt_ratio(e["ns"] / entries[reference]["ns"]) if reference in entries and name != reference else ""
        rows.append([f"`{name}`" + (" (reference)" if name == reference else ""), fmt_time(e["ns"]), rate, ratio])
    note = "" if reference else "\n\nThis group has no reference entry."
    return f"### {group}{note}\n\n" + table(["entry", "time per element", "rate", "÷ reference"], rows)


def outbox_section(records):
    throughput = [r for r in records if r["kind"] == "outbox_throughput"]
    latency = [r for r in records if r["kind"] == "outbox_latency"]
    if not throughput and not latency:
        return None
    parts = ["### outbox\n\nPostgreSQL → NATS JetStream, every event acknowledged; the reference is the plain sqlx + "
             "async-nats relay loop in benches/benches/outbox.rs, run in the same process right after."]
    if throughput:
        # Runs recorded before relays were spawned for a drain drove one `run_batch` loop.
        def driven(r):
            return r.get("driven", "run_batch"), r.get("relays", 1)

        def one_relay(r):
            return next((o for o in throughput if driven(o) == (driven(r)[0], 1) and o["batch_size"] == r["batch_size"]
                         and o.get("aggregates") == r.get("aggregates") and not o.get("waiting")), None)

        rows = []
        for r in throughput:
            how, relays = driven(r)
            one = one_relay(r)
            ratio = fmt_ratio(r["events_per_s"] / one["events_per_s"]) if one and relays != 1 else ""
            waiting = f", {r['waiting']:,} other aggregates waiting for a retry" if r.get("waiting") else ""
            spread = f" over {r['aggregates']:,} aggregates" if r.get("aggregates") else ""
            rows.append([f"{r['events']:,} events{spread}{waiting}", str(r["batch_size"]),
                         "`run_batch` after `run_batch`" if how == "run_batch" else f"{relays} spawned relay{'s' * (relays > 1)}",
                         f"{r['events_per_s']:,.0f}", ratio,
                         f"{r['cpu_us_per_event']:.1f} µs" if r.get("cpu_us_per_event") is not None else ""])
        parts.append("Spawned relays run as a service runs them (default workers, each on a pool and NATS "
                     "connection of its own, as separate processes would be). CPU per event is the bench "
                     "process's (the relays with their database and NATS clients; not the servers') over "
                     "the drain.\n\n"
                     + table(["backlog drained", "batch size", "driven by", "events/s", "÷ one relay",
                              "CPU per event"], rows))
    rows = []
    for load in ("steady", "idle"):
        for wake in ("hook", "poll"):
            ours = next((r for r in latency if (r["relay"], r["load"], r["wake"]) == ("palisade", load, wake)), None)
            ref = next((r for r in latency if (r["relay"], r["load"], r["wake"]) == ("reference", load, wake)), None)
            if not ours:
                continue
            staged = "one event every 20 ms (relay idle)" if load == "idle" else f"about {ours['events_per_s']:,.0f} events/s"
            ref_text = f"{fmt_ms(ref['median_ms'])} / {fmt_ms(ref['p99_ms'])}" if ref else "—"
            ratio = fmt_ratio(ours["median_ms"] / ref["median_ms"]) if ref else ""
            rows.append([staged, "hook + 1 s poll" if wake == "hook" else "1 s poll alone",
                         f"{fmt_ms(ours['median_ms'])} / {fmt_ms(ours['p99_ms'])}", ref_text, ratio])
    if rows:
        parts.append(table(["staged", "wake-up", "palisade median / p99", "reference median / p99",
                            "median ÷ reference"], rows))
    return "\n\n".join(parts)


def hedge_section(records):
    rows = [r for r in records if r["kind"] == "hedge_tail"]
    if not rows:
        return None
    return ("### hedge: tail latency\n\nA downstream taking 1 ms for 95 % of calls and 50 ms for 5 %, 4000 calls, "
            "32 in flight, real time (`tail_latency` in benches/benches/hedge.rs); the reference is no hedging.\n\n"
            + table(["hedge", "p50", "p95", "p99", "max", "extra downstream calls"], [
                [r["hedge"], fmt_ms(r["p50_ms"]), fmt_ms(r["p95_ms"]), fmt_ms(r["p99_ms"]), fmt_ms(r["max_ms"]),
                 f"{r['extra_calls'] * 100:.1f} %"] for r in rows]))


def spread(values):
    values = sorted(values)
    n = len(values)
    median = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    return median, values[0], values[-1]


def one_at_a_time_table(one):
    """The rows of a one-call-at-a-time loop run: each layer against the inner service alone."""
    bare = next((spread(r["ns_per_call"])[0] for r in one if r["entry"] == BARE), None)
    limit = next((r["median"] - bare for r in one if r["entry"] == CONCURRENCY_LIMIT), None) if bare else None
    rows = []
    for r in one:
        median, low, high = spread(r["ns_per_call"])
        over = median - bare if bare is not None else None
        rows.append([
            f"`{r['entry']}`", fmt_time(median), f"{fmt_time(low)} to {fmt_time(high)}",
            fmt_delta(over) if over is not None else "",
            fmt_ratio(over / limit) if over is not None and limit and r["entry"] != BARE else "",
        ])
    return table(["layer", "time per call", "repetitions", "over bare", "× ConcurrencyLimit"], rows)


def loop_section(records):
    one = [r for r in records if r["kind"] == "loop"]
    working = [r for r in records if r["kind"] == "loop_working"]
    two = [r for r in records if r["kind"] == "loop_two_tasks"]
    if not one and not working and not two:
        return None
    parts = []
    if one:
        calls = one[0]["calls"]
        parts.append(
            f"### loop: one call at a time in a plain tokio loop\n\n`ready().await` then `call(1).await`, {calls} calls "
            f"a repetition on a current-thread runtime, the layers taking turns, {len(one[0]['ns_per_call'])} repetitions "
            "(benches/benches/loop.rs): the median, the lowest and highest repetition, the median over the bare "
            "service's, and that as a multiple of `ConcurrencyLimit`'s.\n\n" + one_at_a_time_table(one))
    if working:
        parts.append(
            "### loop: one call at a time, the inner call doing about 20 ns of work\n\nThe same loop over an inner "
            "service whose call does about 20 ns of arithmetic first (`bare` here is that service alone): a layer that "
            "builds a small value, calls the inner service and then copies the value is timed without the stall a "
            "do-nothing inner service causes, when the copy's wide load follows the narrower stores that built the "
            "value too closely to be forwarded.\n\n" + one_at_a_time_table(working))
    if two:
        rows = []
        for r in two:
            median, low, high = spread(r["calls_per_second"])
            ratio = r.get("ratio_to_concurrency_limit")
            rows.append([f"`{r['entry']}`", fmt_rate(median, " calls"),
                         f"{fmt_rate(low, '')} to {fmt_rate(high, '')}", fmt_ratio(ratio) if ratio else ""])
        parts.append(
            f"### loop: two tasks on a two-worker runtime\n\nEach task makes {two[0]['calls_per_task']} calls through "
            "its clone of one service; calls per second over both (median, lowest and highest repetition), and the "
            "median as a multiple of `ConcurrencyLimit`'s.\n\n"
            + table(["layer", "calls/s", "repetitions", "× ConcurrencyLimit"], rows))
    return "\n\n".join(parts)


def memory_section(records):
    rows = [r for r in records if r["kind"] == "memory"]
    if not rows:
        return None
    return ("### memory per entry\n\nHeap held after N distinct keys went through the layer, divided by N "
            "(benches/benches/memory.rs; the maps' growth included).\n\n"
            + table(["entry", "keys", "heap held", "per entry"], [
                [r["entry"], f"{r['entries']:,}", f"{r['bytes_held']:,} B", f"{r['bytes_per_entry']:.0f} B"]
                for r in rows]))


def load_section(run_dir):
    path = run_dir / "load.txt"
    if not path.exists():
        return None
    text = path.read_text()
    # "axum-orders under oha" in runs recorded before the first POSTs were measured with wrk.
    start = text.find("axum-orders under ")
    body = text[start:].strip() if start >= 0 else "The load benchmark printed no figures:\n\n```\n" + text + "\n```"
    return "### Load: axum-orders over HTTP (`benches/load/axum-orders.sh`)\n\n" + body


def render(run_dir):
    meta = json.loads((run_dir / "run.json").read_text())
    groups = read_criterion(run_dir)
    records = read_records(run_dir)
    allocations = {}
    for r in records:
        if r["kind"] == "allocations":
            allocations.setdefault(r["group"], {})[r["entry"]] = r["per_call"]
    started = datetime.datetime.fromisoformat(meta["started"])
    m = meta["machine"]
    services = ", ".join(f"{r['name']} {r['version']}" for r in records if r["kind"] == "service")
    per_bench = ", ".join(f"{b['name']} {b['load_at_start']}" for b in meta["benches"])
    lines = [
        f"<!-- run: {meta['id']} -->",
        f"## {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['kernel']} ({m['arch']})",
        f"- 1-minute load average: {meta['load_at_start']} at the start, {meta['load_at_end']} at the end; "
        f"at the start of each bench: {per_bench}",
        f"- code: commit {meta['commit']}" + (" with uncommitted changes" if meta["uncommitted_changes"] else "")
        + f"; {meta['rustc']}",
        # Runs recorded before the command was kept ran with criterion's arguments only.
        f"- command: `{meta.get('command', 'python3 benches/report.py')}`"
        + (f", criterion arguments `{' '.join(meta['criterion_args'])}`"
           if meta["criterion_args"] and "command" not in meta else ""),
    ]
    if services:
        lines.append(f"- services on the same machine: {services}")
    for r in records:
        if r["kind"] == "skipped":
            lines.append(f"- skipped: {r['group']}: {r['reason']}")
    for b in meta["benches"]:
        if b["status"] != 0:
            lines.append(f"- **{b['name']} failed** (exit status {b['status']}): its figures are missing or partial")
    if "--quick" in meta["criterion_args"]:
        lines.append("- **criterion `--quick`: rough figures, not for comparison**")
    sections = ["\n".join(lines)]
    for group in sorted(groups, key=lambda g: (g.startswith("webhook_verify/"), g)):
        entries = groups[group]
        if group.startswith("webhook_verify/"):
            continue
        if BARE in entries and CONCURRENCY_LIMIT in entries:
            sections.append(harness_group(group, entries, allocations.get(group, {})))
        else:
            sections.append(plain_group(group, entries))
    if any(g.startswith("webhook_verify/") for g in groups):
        sections.append(webhook_groups(groups, records))
    for extra in (outbox_section(records), hedge_section(records), loop_section(records), memory_section(records),
                  load_section(run_dir)):
        if extra:
            sections.append(extra)
    return meta["id"], "\n\n".join(sections) + "\n"


def write_report(run_id, section, output):
    text = output.read_text() if output.exists() else f"# palisade benchmark report\n\n{RUNS_MARKER}\n"
    if RUNS_MARKER not in text:
        sys.exit(f"{output} has no `{RUNS_MARKER}` line to put runs under")
    existing = [m for m in RUN_MARKER.finditer(text) if m.group(1) == run_id]
    if existing:
        start = existing[0].start()
        following = RUN_MARKER.search(text, existing[0].end())
        end = following.start() if following else len(text)
        text = text[:start] + section + ("\n" if following else "") + text[end:]
    else:
        at = text.index(RUNS_MARKER) + len(RUNS_MARKER) + 1
        text = text[:at] + "\n" + section + text[at:]
    output.write_text(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", action="append", help="run only this bench (repeatable)")
    parser.add_argument("--load", action="store_true", help="also run benches/load/axum-orders.sh")
    parser.add_argument("--render", type=Path, metavar="RUN_DIR", help="render a recorded run, run nothing")
    parser.add_argument("--output", type=Path, default=REPORT, help="the report to update (default: %(default)s)")
    parser.add_argument("criterion_args", nargs="*", help="after --: arguments for every criterion bench")
    args = parser.parse_args()
    failed = []
    if args.render:
        run_dir = args.render
    else:
        run_dir, failed = run(args)
    run_id, section = render(run_dir)
    write_report(run_id, section, args.output)
    print(f"==> {args.output} updated with the run {run_id}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
