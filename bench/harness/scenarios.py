"""The scenarios. Each one runs against every stack of the run, one stack after
the other on a freshly started set of processes, so the ratios come from the
same run and each process's peak RSS (VmHWM) belongs to one scenario.

Each scenario provides `steps(plan)` (how many measurements, for progress)
and `estimate(plan)` (seconds, for the ETA), and `run(run)`.
"""

import math
import os
import statistics
import time

import procs
import wrk
from wrk import attr

NOW_CONNECTIONS = 8  # the /now probe under slow load: a few clients, many samples


def body_sleep(ms):
    return '{"ms": %d}' % ms


HASH_BODY = '{"rounds": 20000}'
ECHO_BODY = '{"n": 1}'


def start_estimate(stack_name):
    """Seconds to start and stop the stack (RabbitMQ dominates the peer's)."""
    return 2.5 if stack_name == "monsoon" else 25.0


class Plan:
    """What a run measures: durations, sets, the stacks to run."""

    def __init__(self, quick, duration, stacks):
        self.quick = quick
        self.duration = duration
        self.stacks = stacks  # stack names, e.g. ["monsoon", "peer"]
        if quick:
            self.echo_connections = [16, 64]
            self.ks = [100]
            self.slow_connections = [200]
            self.worker_counts = [1, 2]
        else:
            self.echo_connections = [16, 64, 256]
            self.ks = [100, 1000, 10000]
            self.slow_connections = [200, 2000]
            self.worker_counts = [1, 2, 4]
        self.baseline_connections = 64
        self.scaling_connections = 64
        self.scaling_slots = 4
        # The peer's best no-op setting (bench/peers/tornado_celery/README.md):
        # one worker process with 100 threads. Monsoon: one worker process too;
        # echo is an async task, so its 16 slots are credit, not threads.
        self.echo_workers, self.echo_slots, self.echo_threads = 1, 16, 100
        self.warmup = 0 if quick else 1
        # f. scale-out, Monsoon only: alternating rounds of fresh stacks, 2 s measurements
        # in the smoke run. The credit comparison makes slots the limit (ideal: slots
        # / sleep); the echo ones give the worker more async slots than connections, so
        # that neither slots nor their sharing by two brokers limits them.
        self.scale_rounds = 1 if quick else 5
        self.scale_duration = min(duration, 2) if quick else duration
        self.credit_workers, self.credit_slots = 4, 10
        self.credit_connections, self.credit_sleep_ms = 400, 100
        self.scale_echo_workers, self.scale_echo_slots = 1, 64
        self.scale_connections = 64


def warm_bound(k):
    """Upper bound on the time for K slow requests to become pending (s)."""
    return 2.0 + k / 1000.0


def peer_fixed_warmup(k, phase):
    """The peer exposes no pending count: after its K connections are up, wait this long."""
    base = 1.0 + k / 2500.0
    return max(base, 1.5) if phase == "churn" else base


# --- a. echo throughput and the Beast baseline --------------------------------------------

class EchoThroughput:
    key = "a"
    title = "POST /jobs/echo throughput and latency; GET /now baseline"

    def steps(self, plan):
        return len(plan.stacks) * (len(plan.echo_connections) + 1)

    def estimate(self, plan):
        per = sum(start_estimate(s) + plan.warmup + 1 for s in plan.stacks)
        return per + self.steps(plan) * (plan.duration + 0.5)

    def run(self, run):
        plan = run.plan
        for stack in run.stacks:
            cfg = ({"workers": plan.echo_workers, "slots": plan.echo_slots}
                   if stack.name == "monsoon" else
                   {"pool": "threads", "concurrency": plan.echo_threads})
            out = run.results.setdefault("a", {}).setdefault(stack.name, {})
            with run.stack_session(stack, "a", cfg, out) as ok:
                if not ok:
                    continue
                if plan.warmup:
                    run.warm(stack, wrk.command(stack.url + "/jobs/echo", 64, plan.warmup,
                                                body='{"n": 1}'))
                out["echo"] = {}
                for c in plan.echo_connections:
                    run.step(f"{stack.label}: POST /jobs/echo, {c} connections")
                    out["echo"][c] = run.measure(stack, "a", wrk.command(
                        stack.url + "/jobs/echo", c, plan.duration, body='{"n": 1}'))
                c = plan.baseline_connections
                run.step(f"{stack.label}: GET /now (bare HTTP baseline), {c} connections")
                out["now"] = run.measure(stack, "a", wrk.command(stack.url + "/now", c,
                                                                 plan.duration))


# --- b. /now while K slow jobs are in flight ----------------------------------------------

class NowUnderSlowLoad:
    key = "b"
    title = "GET /now latency while K slow jobs are in flight"

    def steps(self, plan):
        return len(plan.stacks) * len(plan.ks) * 2

    def estimate(self, plan):
        total = 0.0
        for s in plan.stacks:
            for k in plan.ks:
                warm = min(warm_bound(k), 1.0 + k / 4000.0) if s == "monsoon" else \
                    peer_fixed_warmup(k, "held") + 0.5
                total += start_estimate(s) + 2 * (warm + plan.duration + 1) + 4
        return total

    def monsoon_config(self, k):
        return {"workers": 2, "slots": max(50, math.ceil(k / 2)), "threads": 2,
                "max_connections": k + 10000}

    def peer_config(self, k):
        return {"pool": "threads", "workers": 2, "concurrency": max(50, math.ceil(k / 2))}

    def run(self, run):
        plan = run.plan
        for stack in run.stacks:
            by_k = run.results.setdefault("b", {}).setdefault(stack.name, {})
            for k in plan.ks:
                cfg = self.monsoon_config(k) if stack.name == "monsoon" else self.peer_config(k)
                out = by_k.setdefault(k, {})
                if k + 200 > run.nofile:
                    run.warn(f"b: K={k} skipped: the open-files limit is {run.nofile}")
                    continue
                with run.stack_session(stack, "b", cfg, out) as ok:
                    if not ok:
                        continue
                    fe = stack.frontend_pid()
                    out["frontend_idle_kb"] = procs.status_kb(fe, "VmRSS") if fe else None
                    out["churn"] = self.phase(run, stack, k, "churn")
                    self.drain(stack, 1000)
                    out["held"] = self.phase(run, stack, k, "held")
                    held_fe = out["held"].get("frontend_kb")
                    if held_fe and out["frontend_idle_kb"]:
                        out["frontend_bytes_per_pending"] = (
                            (held_fe - out["frontend_idle_kb"]) * 1024.0 / k)

    def phase(self, run, stack, k, phase):
        """churn: slow jobs sleep 1000 ms, so about K complete every second during the
        measurement; held: they sleep longer than the whole phase, so none completes."""
        plan = run.plan
        d = plan.duration
        bound = warm_bound(k)
        if phase == "churn":
            sleep_ms = 1000
            slow_s = math.ceil(bound + d + 5)
            timeout_s = 30
            threshold = int(0.95 * k)
        else:
            slow_s = math.ceil(bound + d + 2)
            sleep_ms = (slow_s + 1) * 1000
            timeout_s = slow_s + 5
            threshold = k
        run.step(f"{stack.label}: K={k} {phase} (slow jobs sleep {sleep_ms} ms), GET /now")
        result = {"sleep_ms": sleep_ms}
        slow = run.start_background(stack, "b", wrk.command(
            stack.url + "/jobs/sleep", k, slow_s, body=body_sleep(sleep_ms),
            timeout_s=timeout_s, latency=(phase == "churn")))
        try:
            began = time.monotonic()
            result.update(wait_in_flight(stack, k, threshold, bound, phase))
            result["warmup_s"] = time.monotonic() - began
            pids = [pid for pid, _ in stack.processes()]
            with procs.RssSampler(pids) as sampler:
                result["now"] = run.measure(stack, "b", wrk.command(
                    stack.url + "/now", NOW_CONNECTIONS, d))
            fe = stack.frontend_pid()
            result["frontend_kb"] = sampler.max_kb.get(fe) if fe else None
            result["pending_after"] = stack.pending()
            result["established_after"] = procs.established(stack.port)
        finally:
            slow_result = slow.stop()
        result["slow"] = slow_result
        if phase == "churn":
            run.check(stack, "b", slow_result)
        elif not slow_result.parsed:
            run.fail(stack, "b", f"no wrk report from the held slow load: {slow_result.command}")
        if stack.has_pending and (result.get("pending") or 0) < threshold:
            got = result.get("pending")
            run.warn(f"b: {stack.label} K={k} {phase}: "
                     + (f"only {got} jobs pending" if got is not None
                        else "GET /healthz never answered")
                     + f" after {result['warmup_s']:.1f} s of warm-up (wanted {threshold}; "
                     f"{result['connections']} connections up); measured anyway")
        return result

    def drain(self, stack, sleep_ms):
        """Waits until the previous phase's jobs are done (pending 0, else a fixed wait)."""
        deadline = time.monotonic() + sleep_ms / 1000.0 + 5
        if not stack.has_pending:
            time.sleep(sleep_ms / 1000.0 + 0.5)
            return
        while time.monotonic() < deadline:
            if (stack.pending() or 0) == 0:
                return
            time.sleep(0.05)


def wait_in_flight(stack, k, threshold, bound, phase):
    """Until K slow requests are pending: their connections are up, then the stack's
    pending count (GET /healthz) reaches threshold, or, for a stack exposing none,
    a fixed warm-up has passed. Bounded by `bound` seconds (plus the fixed warm-up)."""
    began = time.monotonic()
    deadline = began + bound
    conns = 0
    while time.monotonic() < deadline:
        conns = procs.established(stack.port)
        if conns >= k:
            break
        time.sleep(0.1)
    info = {"connections": conns}
    if not stack.has_pending:
        time.sleep(peer_fixed_warmup(k, phase))
        info["pending"] = None
        info["how"] = (f"{conns} connections up, then a fixed "
                       f"{peer_fixed_warmup(k, phase):.1f} s warm-up")
        return info
    seen = None  # the last pending count the stack reported
    while True:
        value = stack.pending()
        if value is not None:
            seen = value
        if (seen or 0) >= threshold or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    info["pending"] = seen
    info["how"] = (f"{conns} connections up, polled GET /healthz until pending >= {threshold}"
                   + ("" if seen is not None else " (it never answered)"))
    return info


# --- c. slow-job capacity -----------------------------------------------------------------

class SlowCapacity:
    key = "c"
    title = "Slow-job capacity: POST /jobs/sleep {\"ms\": 100}"

    def steps(self, plan):
        return len(plan.stacks) * len(plan.slow_connections)

    def estimate(self, plan):
        return sum(start_estimate(s) + 2 for s in plan.stacks) + \
            self.steps(plan) * (plan.duration + 1)

    def run(self, run):
        plan = run.plan
        top = max(plan.slow_connections)
        for stack in run.stacks:
            cfg = ({"workers": 2, "slots": math.ceil(top / 2), "threads": 2}
                   if stack.name == "monsoon"
                   else {"pool": "threads", "workers": 2, "concurrency": math.ceil(top / 2)})
            out = run.results.setdefault("c", {}).setdefault(stack.name, {})
            with run.stack_session(stack, "c", cfg, out) as ok:
                if not ok:
                    continue
                out["worker_processes"] = stack.worker_processes
                for c in plan.slow_connections:
                    run.step(f"{stack.label}: POST /jobs/sleep 100 ms, {c} connections")
                    pids = [pid for pid, _ in stack.processes()]
                    with procs.RssSampler(pids) as sampler:
                        r = run.measure(stack, "c", wrk.command(
                            stack.url + "/jobs/sleep", c, plan.duration, body=body_sleep(100)))
                    rss_mb = sum(sampler.max_kb.values()) / 1024.0
                    out[c] = {"wrk": r, "rss_mb": rss_mb}


# --- d. worker scaling --------------------------------------------------------------------

class WorkerScaling:
    key = "d"
    title = "Worker scaling: echo and hash throughput with 1, 2, 4 worker processes"

    def steps(self, plan):
        return len(plan.stacks) * len(plan.worker_counts) * 2

    def estimate(self, plan):
        return sum(len(plan.worker_counts) * (start_estimate(s) + 2 + 2 * plan.warmup)
                   for s in plan.stacks) + self.steps(plan) * (plan.duration + 0.5)

    def run(self, run):
        plan = run.plan
        c = plan.scaling_connections
        for stack in run.stacks:
            by_n = run.results.setdefault("d", {}).setdefault(stack.name, {})
            for n in plan.worker_counts:
                cfg = ({"workers": n, "slots": plan.scaling_slots} if stack.name == "monsoon"
                       else {"pool": "prefork", "concurrency": n})
                out = by_n.setdefault(n, {})
                with run.stack_session(stack, "d", cfg, out) as ok:
                    if not ok:
                        continue
                    for task, body in (("echo", '{"n": 1}'), ("hash", HASH_BODY)):
                        url = f"{stack.url}/jobs/{task}"
                        if plan.warmup:
                            run.warm(stack, wrk.command(url, c, plan.warmup, body=body))
                        run.step(f"{stack.label}: {n} worker process(es), POST /jobs/{task}, "
                                 f"{c} connections")
                        out[task] = run.measure(stack, "d", wrk.command(
                            url, c, plan.duration, body=body))


# --- f. scale-out -------------------------------------------------------------------------

# (key, label, MonsoonStack topology). The first is the baseline of the ratios.
CREDIT_CONFIGS = (
    ("one", "(i) 1 broker", {"brokers": 1}),
    ("via_one", "(ii) 2 brokers, all load through one", {"brokers": 2, "frontend_brokers": 1}),
    ("split", "(iii) 2 brokers, load split", {"brokers": 2}),
)
# (key, label, topology, measurements): "echo" (wrk -t1), "now" (GET /now under the echo
# load), "echo_t2" (wrk -t2, for the front-end comparison).
ECHO_CONFIGS = (
    ("one", "1 broker", {"brokers": 1}, ("echo", "now", "echo_t2")),
    ("two", "2 brokers", {"brokers": 2}, ("echo", "now")),
    ("brokerless", "no broker", {"brokers": 0}, ("echo", "now")),
    ("two_frontends", "2 front ends, 1 broker", {"brokers": 1, "frontends": 2}, ("echo_t2",)),
)
TARGET_VIA_ONE = 0.9  # (ii) / (i): a second broker must not cost the first one's throughput


def spread(values):
    """median, min, max and n of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def ratios(rounds, base_rounds, figure):
    """Per round, figure / the baseline's figure in the same round (None where either is
    missing): the ratio shares that round's noise."""
    out = []
    for a, b in zip(rounds, base_rounds):
        x, y = get_figure(a, figure), get_figure(b, figure)
        out.append(x / y if x is not None and y else None)
    return out


def get_figure(round_, figure):
    return (round_.get("figures") or {}).get(figure)


def rotated(configs, r):
    """Round r runs the configurations starting from the r-th, so none is always first."""
    i = r % len(configs)
    return configs[i:] + configs[:i]


def broker_sum(stats, counter):
    """A counter summed over the brokers' final stats; None if any broker's is missing."""
    if not stats or any(s is None or counter not in s for s in stats):
        return None
    return sum(s[counter] for s in stats)


def first_broker_share(stats):
    """The first broker's share of the jobs the brokers completed (None with one broker)."""
    total = broker_sum(stats, "completed")
    return stats[0]["completed"] / total if len(stats) > 1 and total else None


def connections_per_frontend(stack, connections, bound_s=3.0):
    """Once wrk's connections are up (bounded), how many each front-end process holds."""
    deadline = time.monotonic() + bound_s
    while True:
        counts = procs.established_by_pid(stack.port, stack.frontend_pids())
        if sum(counts) >= connections or time.monotonic() >= deadline:
            return counts
        time.sleep(0.1)


class ScaleOut:
    key = "f"
    title = ("Scale-out (Monsoon only): credit across brokers, 1 vs 2 brokers, broker vs "
             "brokerless, 1 vs 2 front ends")
    ECHO_STEPS = sum(len(what) for *_, what in ECHO_CONFIGS)

    def steps(self, plan):
        return plan.scale_rounds * (len(CREDIT_CONFIGS) + self.ECHO_STEPS)

    def estimate(self, plan):
        d = plan.scale_duration
        # Measured here: a stack starts and stops in about 1 s, 1.5 s with sleep jobs
        # still queued when wrk stops.
        return plan.scale_rounds * (
            len(CREDIT_CONFIGS) * (1.5 + d) + len(ECHO_CONFIGS) * (1 + plan.warmup)
            + self.ECHO_STEPS * (d + 0.3))

    def run(self, run):
        plan = run.plan
        stack = next(s for s in run.stacks if s.name == "monsoon")
        out = run.results.setdefault("f", {}).setdefault("monsoon", {})
        credit = {key: [] for key, _, _ in CREDIT_CONFIGS}
        echo = {key: [] for key, *_ in ECHO_CONFIGS}
        out.update({"credit": credit, "echo": echo, "loadavg": []})
        for r in range(plan.scale_rounds):
            out["loadavg"].append(os.getloadavg()[0])
            for key, label, topology in rotated(CREDIT_CONFIGS, r):
                credit[key].append(self.credit_round(run, stack, r, label, topology))
            for key, label, topology, what in rotated(ECHO_CONFIGS, r):
                echo[key].append(self.echo_round(run, stack, r, label, topology, what))
        out["summary"] = self.summarise(plan, out)

    def credit_round(self, run, stack, r, label, topology):
        """sleep 100 ms jobs on more connections than slots: slots are the limit."""
        plan = run.plan
        c = plan.credit_connections
        cfg = {"workers": plan.credit_workers, "slots": plan.credit_slots, "threads": 1,
               **topology}
        out = {"round": r + 1, "label": label}
        with run.stack_session(stack, "f", cfg, out) as ok:
            if ok:
                run.step(f"round {r + 1}: credit {label}: POST /jobs/sleep "
                         f"{plan.credit_sleep_ms} ms, {c} connections")
                with procs.CpuMeter([pid for pid, _ in stack.processes()]) as cpu:
                    out["wrk"] = run.measure(stack, "f", wrk.command(
                        stack.url + "/jobs/sleep", c, plan.scale_duration,
                        body=body_sleep(plan.credit_sleep_ms)))
                out["cpu"] = cpu.result
        out["brokers"] = stack.broker_stats
        w = out.get("wrk")
        if w is not None and w.parsed:
            out["figures"] = {
                "jobs_per_s": w.rps, "p50": w.p50, "p99": w.p99, "errors": w.errors,
                "stack_us_per_job": cpu.per_request_us(w.requests),
                "others_cores": cpu.result["others_cores"],
                "refused": broker_sum(out["brokers"], "refused"),
                "credit_updates": broker_sum(out["brokers"], "credit_updates"),
                "first_broker_share": first_broker_share(out["brokers"])}
        return out

    def echo_round(self, run, stack, r, label, topology, what):
        plan = run.plan
        c, d = plan.scale_connections, plan.scale_duration
        cfg = {"workers": plan.scale_echo_workers, "slots": plan.scale_echo_slots,
               "threads": 1, **topology}
        out = {"round": r + 1, "label": label}
        figures = {}
        with run.stack_session(stack, "f", cfg, out) as ok:
            if ok:
                url = stack.url + "/jobs/echo"
                pids = [pid for pid, _ in stack.processes()]
                if plan.warmup:
                    run.warm(stack, wrk.command(url, c, plan.warmup, body=ECHO_BODY,
                                                threads=1 if "echo" in what else 2))
                if "echo" in what:
                    run.step(f"round {r + 1}: {label}: POST /jobs/echo, {c} connections")
                    with procs.CpuMeter(pids) as cpu:
                        out["echo"] = e = run.measure(stack, "f", wrk.command(
                            url, c, d, body=ECHO_BODY))
                    out["echo_cpu"] = cpu.result
                    figures.update({"rps": attr(e, "rps"), "p50": attr(e, "p50"),
                                    "p99": attr(e, "p99"), "errors": attr(e, "errors"),
                                    "stack_us": cpu.per_request_us(attr(e, "requests")),
                                    "others_cores": cpu.result["others_cores"]})
                if "now" in what:
                    run.step(f"round {r + 1}: {label}: GET /now, {NOW_CONNECTIONS} connections, "
                             f"under POST /jobs/echo at {c} connections")
                    load = run.start_background(stack, "f", wrk.command(
                        url, c, d + 2, body=ECHO_BODY))
                    try:
                        out["now"] = n = run.measure(stack, "f", wrk.command(
                            stack.url + "/now", NOW_CONNECTIONS, d))
                    finally:
                        out["echo_under_now"] = load.stop()
                    run.check(stack, "f", out["echo_under_now"])
                    figures.update({"now_p50": attr(n, "p50"), "now_p99": attr(n, "p99"),
                                    "now_rps": attr(n, "rps"),
                                    "echo_under_now_rps": attr(out["echo_under_now"], "rps")})
                if "echo_t2" in what:
                    run.step(f"round {r + 1}: {label}: POST /jobs/echo, {c} connections, "
                             "wrk -t2")
                    spread_ = []
                    with procs.CpuMeter(pids) as cpu:
                        out["echo_t2"] = e = run.measure(
                            stack, "f", wrk.command(url, c, d, body=ECHO_BODY, threads=2),
                            during=lambda: spread_.extend(connections_per_frontend(stack, c)))
                    out["echo_t2_cpu"] = cpu.result
                    out["connections_per_frontend"] = spread_
                    figures.update({"t2_rps": attr(e, "rps"), "t2_p50": attr(e, "p50"),
                                    "t2_p99": attr(e, "p99"),
                                    "t2_stack_us": cpu.per_request_us(attr(e, "requests")),
                                    "t2_others_cores": cpu.result["others_cores"]})
        out["brokers"] = stack.broker_stats
        figures.update({"refused": broker_sum(out["brokers"], "refused"),
                        "credit_updates": broker_sum(out["brokers"], "credit_updates")})
        out["figures"] = figures
        return out

    @staticmethod
    def summarise(plan, out):
        """Per configuration, each figure's median and range over the rounds, and its
        per-round ratio to the baseline (the group's first configuration)."""
        def group(rounds_by_key, labels):
            base = rounds_by_key[labels[0][0]]
            result = {}
            for key, label in labels:
                rounds = rounds_by_key[key]
                names = sorted({f for x in rounds for f in (x.get("figures") or {})})
                result[key] = {
                    "label": label,
                    "figures": {f: spread([get_figure(x, f) for x in rounds]) for f in names},
                    "ratios": {f: spread(ratios(rounds, base, f)) for f in names}}
            return result

        def others(groups):
            return spread([get_figure(x, f) for runs in groups for x in runs
                           for f in ("others_cores", "t2_others_cores")])
        return {
            "ideal_jobs_per_s": plan.credit_workers * plan.credit_slots * 1000.0
            / plan.credit_sleep_ms,
            "target_via_one": TARGET_VIA_ONE,
            "credit": group(out["credit"], [(k, lbl) for k, lbl, _ in CREDIT_CONFIGS]),
            "echo": group(out["echo"], [(k, lbl) for k, lbl, *_ in ECHO_CONFIGS]),
            # The noise: cores that other processes used during the measurements.
            "others_cores_sleep": others(out["credit"].values()),
            "others_cores_echo": others(out["echo"].values()),
            "loadavg": spread(out["loadavg"]),
        }


ALL = [EchoThroughput(), NowUnderSlowLoad(), SlowCapacity(), WorkerScaling(), ScaleOut()]
