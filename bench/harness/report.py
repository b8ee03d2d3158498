"""report.md and the gnuplot PNGs of one run."""

import os
import subprocess

import scenarios
from procs import run_bounded
from wrk import attr

STACKS = (("monsoon", "Monsoon"), ("peer", "peer"))
PCTS = ("p50", "p75", "p90", "p99")


# --- formatting ---------------------------------------------------------------------------

def f_rate(x):
    if x is None:
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def f_ms(x):
    if x is None:
        return "—"
    if x >= 1000:
        return f"{x / 1000:.2f} s"
    if x >= 10:
        return f"{x:.1f} ms"
    return f"{x:.2f} ms"


def f_mb(kb):
    return "—" if kb is None else f"{kb / 1024:.1f} MB"


def ratio(m, p):
    if m is None or p is None or p == 0:
        return "—"
    r = m / p
    return f"{r:.2f}×" if r < 100 else f"{r:,.0f}×"


def f_err(r):
    if r is None:
        return "—"
    if not r.errors:
        return "0"
    return f"{r.errors:,} ({100 * r.error_rate:.1f}%: {r.error_summary()})"


def get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def lat(r, name):
    """A latency cell: the value, or what happened when there was none."""
    if r is not None and r.parsed and r.requests == 0:
        return f"no reply in {r.seconds:.0f} s"
    return f_ms(attr(r, name))


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def f_tenths(x):
    return f"{x:.1f}"


def f_hundredths(x):
    return f"{x:.2f}"


def f_count(n):
    return f"{n:,.0f}"


def f_share(sp):
    """The first broker's share of the completed jobs, and the second's: the medians."""
    if sp is None:
        return "—"
    return f"{100 * sp['median']:.0f}% / {100 * (1 - sp['median']):.0f}%"


def f_ratio(r):
    return "—" if r is None else f"{r:.2f}×"


def f_spread(sp, fmt):
    """A figure over rounds: its median, and its range when there were several rounds."""
    if sp is None:
        return "—"
    low, high = fmt(sp["min"]), fmt(sp["max"])
    if low == high:
        return fmt(sp["median"])
    return f"{fmt(sp['median'])} ({low}–{high})"


def median(group, key, figure):
    return get(group, key, "figures", figure, "median")


def ratio_median(group, key, figure):
    return get(group, key, "ratios", figure, "median")


def ratio_verdict(sp):
    """What the per-round ratios say: every round on one side of 1, or not."""
    if sp is None:
        return "not measured"
    text = f"{sp['median']:.2f}×"
    if sp["n"] == 1:
        return text + " (one round)"
    text += f" (rounds {sp['min']:.2f}–{sp['max']:.2f})"
    if sp["min"] > 1:
        return text + ", higher in every round"
    if sp["max"] < 1:
        return text + ", lower in every round"
    return text + ": no difference beyond this run's noise (rounds on both sides of 1)"


def target_verdict(s):
    sp = get(s, "credit", "via_one", "ratios", "jobs_per_s")
    if sp is None:
        return "not measured"
    met = "met" if sp["median"] >= s["target_via_one"] else "**not met**"
    if sp["n"] == 1:
        return met + " (one round)"
    if sp["min"] >= s["target_via_one"]:
        return met + " in every round"
    return met + f", lowest round {sp['min']:.2f}×"


# --- the report ---------------------------------------------------------------------------

class Report:
    def __init__(self, run):
        self.run = run
        self.res = run.results
        self.plan = run.plan
        self.stacks = [s for s in STACKS if s[0] in self.plan.stacks]
        self.both = len(self.stacks) == 2

    def cfg(self, scen, name, *keys):
        node = get(self.res, scen, name, *keys)
        return get(node, "config") if node else None

    def configs(self, scen, keyed=None):
        lines = []
        for name, label in self.stacks:
            if keyed is None:
                c = self.cfg(scen, name)
                if c:
                    lines.append(f"- {label}: {c}")
            else:
                for k in keyed:
                    c = self.cfg(scen, name, k)
                    if c:
                        lines.append(f"- {label}, {k}: {c}")
        return "\n".join(lines)

    def write(self, path, plots):
        run, plan = self.run, self.plan
        m = run.machine
        lines = [
            f"# Monsoon vs Tornado + Celery + RabbitMQ — {run.date}",
            "",
            f"Measured by `{run.invocation}` in {run.elapsed_text()} "
            f"({'smoke run, Monsoon only' if plan.quick else 'full run'}; scenarios "
            f"{', '.join(sorted(self.res))}), "
            f"{plan.duration} s per measurement. Everything ran on this machine over loopback "
            "(127.0.0.1), wrk sharing the cores with the stacks; each scenario started fresh "
            "processes. Ratios are **Monsoon ÷ peer** from this same run (scenario f "
            "compares Monsoon's topologies with each other): above 1 is better "
            "for throughput, below 1 is better for latency and memory.",
            "",
            "## Machine and versions",
            "",
            f"- CPU: {m['cpu']}, nproc {m['nproc']}; memory {m['memory']}; "
            f"Linux {m['kernel']}; open files limit {m['nofile']}; "
            f"load average at start {m['loadavg']:.2f}",
        ]
        for k, v in run.versions.items():
            if "\n" in v:
                lines += [f"- {k}:", "", "```", v, "```", ""]
            else:
                lines.append(f"- {k}: {v}")
        lines += ["", "wrk runs one thread (`-t1`, `-t2` where scenario f says so) with "
                  "keep-alive connections; latencies "
                  "come from its `--latency` distribution (p50/p75/p90/p99) and its max.", ""]
        problems = run.failures + run.peer_problems + run.warnings
        if problems:
            lines += ["## Problems", ""]
            lines += [f"- **failure**: {p}" for p in run.failures]
            lines += [f"- peer: {p}" for p in run.peer_problems]
            lines += [f"- note: {p}" for p in run.warnings]
            lines.append("")
        lines += self.summary()
        lines += self.section_a() + self.section_b() + self.section_c() + self.section_d()
        lines += self.section_e() + self.section_f()
        if plots:
            lines += ["## Plots", ""]
            lines += [f"![{title}]({name})\n" for name, title in plots]
        lines += ["## Commands run", "",
                  "Ports are picked free at run time; paths are relative to the repository root.",
                  ""]
        for key, cmds in run.commands.items():
            if cmds:
                lines += [f"### {key}", "", "```sh", *cmds, "```", ""]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")

    # summary ------------------------------------------------------------------------------
    def summary(self):
        res, plan = self.res, self.plan
        items = []
        c = plan.baseline_connections
        m, p = get(res, "a", "monsoon", "echo", c), get(res, "a", "peer", "echo", c)
        if attr(m, "rps"):
            items.append(f"`POST /jobs/echo` at {c} connections: Monsoon {f_rate(attr(m, 'rps'))} "
                         f"req/s" + (f", peer {f_rate(attr(p, 'rps'))} req/s "
                                     f"(**{ratio(attr(m, 'rps'), attr(p, 'rps'))}**)"
                                     if self.both else "")
                         + f"; p99 {lat(m, 'p99')}" + (f" vs {lat(p, 'p99')}" if self.both else ""))
        for phase in ("held", "churn"):
            k = plan.ks[-1]
            m = get(res, "b", "monsoon", k, phase, "now")
            p = get(res, "b", "peer", k, phase, "now")
            if m is not None:
                items.append(f"`GET /now` p99 with K={k:,} slow jobs in flight ({phase}): "
                             f"Monsoon {lat(m, 'p99')}" + (f", peer {lat(p, 'p99')}"
                                                            if self.both else ""))
        top = max(plan.slow_connections)
        m = get(res, "c", "monsoon", top, "wrk")
        p = get(res, "c", "peer", top, "wrk")
        if m is not None:
            items.append(f"`sleep 100` jobs at {top:,} connections: Monsoon "
                         f"{f_rate(attr(m, 'rps'))} jobs/s" + (
                             f", peer {f_rate(attr(p, 'rps'))} jobs/s "
                             f"(**{ratio(attr(m, 'rps'), attr(p, 'rps'))}**)" if self.both else ""))
        totals = {}
        for name, _ in self.stacks:
            peaks = get(res, "a", name, "peaks")
            if peaks:
                totals[name] = sum(kb for _, _, kb in peaks if kb)
        if totals.get("monsoon"):
            items.append(f"memory under scenario a (sum of peak RSS): Monsoon "
                         f"{f_mb(totals['monsoon'])}" + (
                             f", peer {f_mb(totals.get('peer'))} "
                             f"(**{ratio(totals['monsoon'], totals.get('peer'))}**)"
                             if self.both else ""))
        k = plan.ks[-1]
        bpp = get(res, "b", "monsoon", k, "frontend_bytes_per_pending")
        if bpp is not None:
            items.append(f"Monsoon front end: {bpp:,.0f} bytes per pending request at K={k:,}")
        items += self.summary_f()
        if not items:
            return []
        return ["## Summary", ""] + [f"- {i}" for i in items] + [""]

    def summary_f(self):
        s = get(self.res, "f", "monsoon", "summary")
        if not s:
            return []
        credit, echo = s["credit"], s["echo"]
        items = [
            f"credit across brokers (f, `sleep 100` on 4 workers × 10 slots, 400 connections, "
            f"ideal {f_rate(s['ideal_jobs_per_s'])} jobs/s): 1 broker "
            f"{f_rate(median(credit, 'one', 'jobs_per_s'))}, 2 brokers with all load through "
            f"one {f_rate(median(credit, 'via_one', 'jobs_per_s'))} "
            f"(**{f_ratio(ratio_median(credit, 'via_one', 'jobs_per_s'))}** of 1 broker; "
            f"target ≥ {s['target_via_one']}×: {target_verdict(s)}), load split "
            f"{f_rate(median(credit, 'split', 'jobs_per_s'))} "
            f"({f_ratio(ratio_median(credit, 'split', 'jobs_per_s'))}) jobs/s"]
        for key, what in (("two", "2 brokers vs 1"), ("brokerless", "brokerless vs 1 broker")):
            items.append(
                f"{what} (f): echo at 64 connections "
                f"**{f_ratio(ratio_median(echo, key, 'rps'))}**, stack CPU per request "
                f"{f_ratio(ratio_median(echo, key, 'stack_us'))}, `GET /now` p99 under the "
                f"echo load {f_ratio(ratio_median(echo, key, 'now_p99'))}")
        items.append(f"2 front ends vs 1 on one port (f, `--reuse-port`, wrk -t2): echo "
                     f"**{f_ratio(ratio_median(echo, 'two_frontends', 't2_rps'))}**")
        return items

    # a --------------------------------------------------------------------------------
    def section_a(self):
        a = self.res.get("a")
        if not a:
            return []
        rows = []
        for c in self.plan.echo_connections:
            rows.append(self.rate_row(f"POST /jobs/echo, {c} conns", "a", ("echo", c)))
        rows.append(self.rate_row(f"GET /now (baseline), {self.plan.baseline_connections} conns",
                                  "a", ("now",)))
        out = ["## a. Echo throughput and the bare HTTP baseline", "",
               "`POST /jobs/echo` makes the whole trip (HTTP → broker → worker → back); "
               "`GET /now` is answered by the HTTP server itself (Beast for Monsoon, Tornado "
               "for the peer), the ceiling any job route can reach on this machine.", "",
               self.configs("a"), "",
               table(["load", "Monsoon req/s", "peer req/s", "ratio", "Monsoon p50",
                      "peer p50", "Monsoon p99", "peer p99", "p99 ratio", "errors Monsoon",
                      "errors peer"], rows), ""]
        c = self.plan.baseline_connections
        if c in self.plan.echo_connections:
            for name, label in self.stacks:
                echo = attr(get(a, name, "echo", c), "rps")
                now = attr(get(a, name, "now"), "rps")
                if echo and now:
                    out.append(f"- {label}: echo at {c} connections is "
                               f"**{100 * echo / now:.0f}%** of its own `GET /now` "
                               f"({f_rate(echo)} vs {f_rate(now)} req/s).")
            out.append("")
        return out

    def rate_row(self, label, scen, keys):
        m = get(self.res, scen, "monsoon", *keys)
        p = get(self.res, scen, "peer", *keys)
        return [label, f_rate(attr(m, "rps")), f_rate(attr(p, "rps")),
                ratio(attr(m, "rps"), attr(p, "rps")),
                lat(m, "p50"), lat(p, "p50"),
                lat(m, "p99"), lat(p, "p99"),
                ratio(attr(m, "p99"), attr(p, "p99")), f_err(m), f_err(p)]

    # b --------------------------------------------------------------------------------
    def section_b(self):
        b = self.res.get("b")
        if not b:
            return []
        rows = []
        for k in self.plan.ks:
            for phase in ("held", "churn"):
                m = get(b, "monsoon", k, phase)
                p = get(b, "peer", k, phase)
                mn, pn = get(m, "now"), get(p, "now")
                rows.append([
                    f"{k:,}", phase,
                    " / ".join("—" if get(x, "pending") is None else f"{get(x, 'pending'):,}"
                               for x in (m, p)),
                    lat(mn, "p50"), lat(mn, "p99"), lat(mn, "max"),
                    lat(pn, "p50"), lat(pn, "p99"), lat(pn, "max"),
                    ratio(attr(mn, "p99"), attr(pn, "p99")),
                    f_rate(attr(mn, "rps")), f_rate(attr(pn, "rps")),
                    self.slow_cell(m) if phase == "churn" else "—",
                    self.slow_cell(p) if phase == "churn" else "—",
                    f_err(mn) + " / " + f_err(pn)])
        held_ms = get(b, "monsoon", self.plan.ks[0], "held", "sleep_ms")
        out = ["## b. GET /now while K slow jobs are in flight", "",
               f"A wrk holds K connections on `POST /jobs/sleep`, one request in flight on each; "
               f"once they are pending a second wrk (`-c{8}`) measures `GET /now` for "
               f"{self.plan.duration} s. **held**: the slow jobs sleep longer than the whole "
               f"phase (e.g. {held_ms} ms at K={self.plan.ks[0]}), so all K stay pending and "
               "none completes during the measurement. **churn**: they sleep 1000 ms and the "
               "slow wrk keeps running, so about K jobs complete (and K new ones arrive) every "
               "second while `/now` is measured (the slow jobs' own count and latency over "
               "the whole phase, first wave included, show it). The measurement starts once "
               "the K connections are established and the stack's pending count "
               "(`GET /healthz`) reaches K (95% of K for churn); a stack without that count "
               "would get a fixed warm-up instead. Each K runs on freshly started stacks "
               "(slots sized to K, so no job waits in a queue):", "",
               self.configs("b", self.plan.ks), "",
               table(["K", "phase", "pending Monsoon / peer", "Monsoon p50", "Monsoon p99",
                      "Monsoon max", "peer p50", "peer p99", "peer max", "p99 ratio",
                      "Monsoon /now req/s", "peer /now req/s", "Monsoon slow jobs: done, p50, p99",
                      "peer slow jobs: done, p50, p99", "/now errors Monsoon / peer"], rows), ""]
        notes = []
        for name, label in self.stacks:
            for k in self.plan.ks:
                for phase in ("held", "churn"):
                    how = get(b, name, k, phase, "how")
                    if how:
                        notes.append(f"{label} K={k} {phase}: {how}, "
                                     f"{get(b, name, k, phase, 'warmup_s') or 0:.1f} s")
        if notes:
            out += ["<details><summary>warm-up per phase</summary>", "",
                    *[f"- {n}" for n in notes], "", "</details>", ""]
        return out

    @staticmethod
    def slow_cell(phase):
        r = get(phase, "slow")
        if r is None or not r.parsed:
            return "—"
        return f"{r.requests:,}, {f_ms(r.p50)}, {f_ms(r.p99)}"

    # c --------------------------------------------------------------------------------
    def section_c(self):
        c = self.res.get("c")
        if not c:
            return []
        rows, rows2 = [], []
        for conns in self.plan.slow_connections:
            m, p = get(c, "monsoon", conns), get(c, "peer", conns)
            mw, pw = get(m, "wrk"), get(p, "wrk")
            mr, pr = attr(mw, "rps"), attr(pw, "rps")
            mwp, pwp = get(c, "monsoon", "worker_processes"), get(c, "peer", "worker_processes")
            mper = mr / mwp if mr is not None and mwp else None
            pper = pr / pwp if pr is not None and pwp else None
            mmb = mr / get(m, "rss_mb") if mr is not None and get(m, "rss_mb") else None
            pmb = pr / get(p, "rss_mb") if pr is not None and get(p, "rss_mb") else None
            rows.append([f"{conns:,}", f"{conns * 10:,}", f_rate(mr), f_rate(pr), ratio(mr, pr),
                         f_rate(mper), f_rate(pper), ratio(mper, pper),
                         lat(mw, "p50"), lat(pw, "p50"),
                         lat(mw, "p99"), lat(pw, "p99"),
                         f_err(mw) + " / " + f_err(pw)])
            rows2.append([f"{conns:,}",
                          "—" if get(m, "rss_mb") is None else f"{get(m, 'rss_mb'):.0f} MB",
                          "—" if get(p, "rss_mb") is None else f"{get(p, 'rss_mb'):.0f} MB",
                          f_rate(mmb), f_rate(pmb), ratio(mmb, pmb)])
        return ["## c. Slow-job capacity", "",
                "`POST /jobs/sleep {\"ms\": 100}` on N connections: each job holds a worker "
                "slot for 100 ms, so the ideal is 10 jobs/s per connection; what is lost is "
                "the stacks' overhead per job. Per worker process divides by the processes "
                "that run tasks; per MB divides by the stack's RSS (the sum over all its "
                "processes of each one's highest VmRSS sampled during the measurement).", "",
                self.configs("c"), "",
                table(["connections", "ideal jobs/s", "Monsoon jobs/s", "peer jobs/s", "ratio",
                       "Monsoon per worker process", "peer per worker process", "ratio",
                       "Monsoon p50", "peer p50", "Monsoon p99", "peer p99",
                       "errors Monsoon / peer"], rows), "",
                table(["connections", "Monsoon RSS", "peer RSS", "Monsoon jobs/s per MB",
                       "peer jobs/s per MB", "ratio"], rows2), ""]

    # d --------------------------------------------------------------------------------
    def section_d(self):
        d = self.res.get("d")
        if not d:
            return []
        rows = []
        for task in ("echo", "hash"):
            base = {name: attr(get(d, name, self.plan.worker_counts[0], task), "rps")
                    for name, _ in self.stacks}
            for n in self.plan.worker_counts:
                m, p = get(d, "monsoon", n, task), get(d, "peer", n, task)
                mr, pr = attr(m, "rps"), attr(p, "rps")
                rows.append([task, n, f_rate(mr), f_rate(pr), ratio(mr, pr),
                             ratio(mr, base.get("monsoon")), ratio(pr, base.get("peer")),
                             lat(m, "p50"), lat(p, "p50"),
                             lat(m, "p99"), lat(p, "p99"),
                             f_err(m) + " / " + f_err(p)])
        return ["## d. Worker scaling", "",
                f"`POST /jobs/echo` and `POST /jobs/hash {{\"rounds\": 20000}}` (iterated "
                f"SHA-256, CPU-bound) on {self.plan.scaling_connections} connections with 1, 2, "
                f"4 worker processes. Monsoon workers have {self.plan.scaling_slots} slots each "
                "(threads; a slot also hides the broker round trip, as there is no prefetch); "
                "the peer runs Celery's default prefork pool with one process per worker "
                f"(each runs one task at a time and prefetches some). With {self.run.machine['nproc']} "
                "cores, more processes than cores cannot add CPU.", "",
                table(["task", "worker processes", "Monsoon req/s", "peer req/s", "ratio",
                       "Monsoon vs 1 worker", "peer vs 1 worker", "Monsoon p50", "peer p50",
                       "Monsoon p99", "peer p99", "errors Monsoon / peer"], rows), ""]

    # e --------------------------------------------------------------------------------
    def section_e(self):
        cols = []
        if self.res.get("a"):
            cols.append(("a", ("a",)))
        for k in self.plan.ks:
            if get(self.res, "b"):
                cols.append((f"b, K={k:,}", ("b", k)))
        if not cols:
            return []
        rows = []
        for name, label in self.stacks:
            labels = []
            per_col = []
            for _, keys in cols:
                peaks = get(self.res, keys[0], name, *keys[1:], "peaks") or []
                d = {}
                for role, _pid, kb in peaks:
                    d[role] = kb
                    if role not in labels:
                        labels.append(role)
                per_col.append(d)
            for role in (sorted(labels) if name == "peer" else labels):
                rows.append([label, role] + [f_mb(d.get(role)) for d in per_col])
            if labels:
                rows.append([label, "**total**"] + [
                    f_mb(sum(v for v in d.values() if v)) if d else "—" for d in per_col])
        out = ["## e. Memory", "",
               "Peak RSS (VmHWM from /proc/PID/status, read just before the processes stop) "
               "of every process of each stack during scenario a and each K of scenario b "
               "(fresh processes each time, so each peak belongs to that load).", "",
               table(["stack", "process"] + [c for c, _ in cols], rows), ""]
        if not self.res.get("b"):
            return out
        brows = []
        for k in self.plan.ks:
            row = [f"{k:,}"]
            for name, _ in self.stacks:
                node = get(self.res, "b", name, k) or {}
                idle, held = node.get("frontend_idle_kb"), get(node, "held", "frontend_kb")
                bpp = node.get("frontend_bytes_per_pending")
                row += [f_mb(idle), f_mb(held), "—" if bpp is None else f"{bpp:,.0f}"]
            brows.append(row)
        header = ["K"]
        for _, label in self.stacks:
            header += [f"{label} front end idle", f"{label} with K pending (held)",
                       f"{label} bytes per pending request"]
        out += ["Front-end bytes per pending request: (the front end's highest VmRSS while K "
                "jobs were held pending − its VmRSS just after start) ÷ K. It includes each "
                "request's connection, as every pending request holds one.", "",
                table(header, brows), ""]
        return out


    # f --------------------------------------------------------------------------------
    def section_f(self):
        f = get(self.res, "f", "monsoon")
        s = get(f, "summary")
        if not s:
            return []
        plan = self.plan
        credit, echo = s["credit"], s["echo"]
        rounds = plan.scale_rounds
        load = s.get("loadavg")
        out = ["## f. Scale-out (Monsoon only)", "",
               f"Monsoon's topologies compared with each other, in {rounds} alternating "
               f"round(s): each round starts every configuration afresh (processes on new "
               f"ports), in an order that rotates from round to round, and measures it for "
               f"{plan.scale_duration} s, so that all of them share the machine's noise. A "
               "cell shows the median over the rounds and, in brackets, the lowest and "
               "highest round; a ratio (÷) is taken within each round, against the first row "
               "of its table, and summarised the same way (above 1 is better for throughput, "
               "below 1 for latency and CPU). Stack CPU is the utime + stime "
               "of the stack's processes during the measurement (from /proc) per request: "
               "it moves less with the machine's other load than throughput does. The "
               f"{self.run.machine['nproc']} cores are shared by wrk, the stack and "
               "anything else running. Other processes used "
               f"{f_spread(s.get('others_cores_echo'), f_hundredths)} cores during the echo "
               f"measurements and {f_spread(s.get('others_cores_sleep'), f_hundredths)} "
               "during the sleep ones, where the stack itself needs little CPU (from "
               "/proc/stat, less the stack, wrk and the harness); the load average at each "
               "round's start was "
               f"{f_spread(load, f_tenths)}.", ""]

        def cfg_lines(group, labels):
            lines = []
            for key, label in labels:
                first = next((x for x in get(f, group, key) or [] if x.get("config")), None)
                if first:
                    lines.append(f"- {label}: {first['config']}")
            return lines

        # f1 --------------------------------------------------------------------------
        ideal = s["ideal_jobs_per_s"]
        rows = []
        for key in ("one", "via_one", "split"):
            c = credit[key]
            jobs = get(c, "figures", "jobs_per_s")
            rows.append([c["label"], f_spread(jobs, f_rate),
                         "—" if jobs is None else f"{100 * jobs['median'] / ideal:.0f}%",
                         "1" if key == "one" else f_spread(get(c, "ratios", "jobs_per_s"),
                                                           f_ratio),
                         f_spread(get(c, "figures", "p50"), f_ms),
                         f_spread(get(c, "figures", "p99"), f_ms),
                         f_spread(get(c, "figures", "stack_us_per_job"), f_tenths),
                         f_spread(get(c, "figures", "refused"), f_count),
                         f_spread(get(c, "figures", "credit_updates"), f_count),
                         f_spread(get(c, "figures", "errors"), f_count),
                         f_share(get(c, "figures", "first_broker_share"))])
        out += ["### f1. Credit across brokers: slots are the limit", "",
                f"`POST /jobs/sleep {{\"ms\": {plan.credit_sleep_ms}}}` on "
                f"{plan.credit_connections} connections to {plan.credit_workers} workers × "
                f"{plan.credit_slots} async slots: the ideal is "
                f"{f_rate(ideal)} jobs/s ({plan.credit_workers * plan.credit_slots} slots ÷ "
                f"{plan.credit_sleep_ms / 1000:g} s), what is lost are slots left idle. "
                "(ii) registers every worker with a second broker that gets no load: its "
                "registrations must not keep the loaded broker from the slots (target: "
                f"(ii) ≥ {s['target_via_one']} × (i)). (iii) splits the load over both "
                "brokers, whose credits together exceed the slots (protocol 1.2, optimistic "
                "credit): a job that finds every slot busy is refused and requeued, and the "
                "worker sends CREDIT when slots free up. Refused and CREDIT counts are the "
                "brokers' own (their final stats line on SIGTERM, summed over the brokers, "
                "for each stack's whole life).", "",
                *cfg_lines("credit", [(k, credit[k]["label"]) for k in credit]), "",
                table(["configuration", "jobs/s", "of ideal", "÷ (i)", "p50", "p99",
                       "stack CPU µs/job", "refused", "CREDIT updates", "errors",
                       "jobs done by broker A / B"], rows), "",
                f"(ii) ÷ (i): {ratio_verdict(get(credit, 'via_one', 'ratios', 'jobs_per_s'))}"
                f"; target ≥ {s['target_via_one']}×: {target_verdict(s)}. (iii) ÷ (i): "
                f"{ratio_verdict(get(credit, 'split', 'ratios', 'jobs_per_s'))}; the front "
                "end sends each broker every other job, yet brokers A / B completed "
                f"{f_share(get(credit, 'split', 'figures', 'first_broker_share'))} of the "
                "jobs, with p99 "
                f"{f_ms(median(credit, 'split', 'p99'))} against "
                f"{f_ms(median(credit, 'one', 'p99'))} with one broker: a job waits longer "
                "in the queue of the broker that gets the smaller share of the slots.", ""]

        # f2, f3 ----------------------------------------------------------------------
        def echo_table(keys):
            rows = []
            for key in keys:
                e = echo[key]
                first = key == keys[0]

                def cell(fig, fmt):
                    value = f_spread(get(e, "figures", fig), fmt)
                    if first:
                        return value, "1"
                    return value, f_spread(get(e, "ratios", fig), f_ratio)

                rps, rps_r = cell("rps", f_rate)
                cpu, cpu_r = cell("stack_us", f_tenths)
                now, now_r = cell("now_p99", f_ms)
                rows.append([e["label"], rps, rps_r, f_spread(get(e, "figures", "p99"), f_ms),
                             cpu, cpu_r, now, now_r,
                             f_spread(get(e, "figures", "echo_under_now_rps"), f_rate),
                             f_spread(get(e, "figures", "refused"), f_count),
                             f_spread(get(e, "figures", "errors"), f_count)])
            return table(["topology", "echo req/s", "÷", "echo p99", "stack CPU µs/request",
                          "÷", "/now p99 under echo load", "÷", "echo req/s during the /now "
                          "probe", "refused", "errors"], rows)

        c = plan.scale_connections
        load_text = (f"`POST /jobs/echo` at {c} connections (wrk -t1), then `GET /now` at "
                     f"{scenarios.NOW_CONNECTIONS} connections measured while the same echo "
                     "load runs in the background")
        out += ["### f2. One broker or two", "",
                f"{load_text}; the front end spreads jobs over two brokers "
                "(`--broker A,B`) and the worker registers with both, against one broker. "
                f"The worker has {plan.scale_echo_slots} async slots, more than the "
                "connections, so slots and their sharing do not limit this load: it shows "
                "what a second broker process costs or gives. Echo ÷ 1 broker: "
                f"{ratio_verdict(get(echo, 'two', 'ratios', 'rps'))}; stack CPU per request: "
                f"{ratio_verdict(get(echo, 'two', 'ratios', 'stack_us'))}; `/now` p99: "
                f"{ratio_verdict(get(echo, 'two', 'ratios', 'now_p99'))}.", "",
                *cfg_lines("echo", [(k, echo[k]["label"]) for k in ("one", "two")]), "",
                echo_table(("one", "two")), "",
                "### f3. Broker or brokerless", "",
                f"The same loads with no broker process: the front end hosts the dispatcher "
                "(`--worker-endpoint`) and the worker connects to it, one hop and one process "
                "fewer. Echo ÷ 1 broker: "
                f"{ratio_verdict(get(echo, 'brokerless', 'ratios', 'rps'))}; stack CPU per "
                f"request: {ratio_verdict(get(echo, 'brokerless', 'ratios', 'stack_us'))}; "
                f"`/now` p99: {ratio_verdict(get(echo, 'brokerless', 'ratios', 'now_p99'))}.",
                "", *cfg_lines("echo", [("brokerless", echo["brokerless"]["label"])]), "",
                echo_table(("one", "brokerless")), ""]

        # f4 --------------------------------------------------------------------------
        rows = []
        for key in ("one", "two_frontends"):
            e = echo[key]
            spreads = [x.get("connections_per_frontend") for x in get(f, "echo", key) or []]
            rows.append([
                "1 front end" if key == "one" else "2 front ends",
                f_spread(get(e, "figures", "t2_rps"), f_rate),
                "1" if key == "one" else f_spread(get(e, "ratios", "t2_rps"), f_ratio),
                f_spread(get(e, "figures", "t2_p50"), f_ms),
                f_spread(get(e, "figures", "t2_p99"), f_ms),
                f_spread(get(e, "figures", "t2_stack_us"), f_tenths),
                "1" if key == "one" else f_spread(get(e, "ratios", "t2_stack_us"), f_ratio),
                ", ".join("/".join(str(n) for n in sp) for sp in spreads if sp) or "—"])
        out += ["### f4. One front-end process or two on one port", "",
                f"`POST /jobs/echo` at {c} connections with wrk -t2 (two load threads) through "
                "one broker: one front end, or two front-end processes sharing the port with "
                "`--reuse-port` (SO_REUSEPORT: the kernel spreads connections over them; the "
                "last column shows how, per round). With "
                f"{self.run.machine['nproc']} cores shared by wrk's two threads, the front "
                "ends, the broker and the worker, a second front-end process cannot add a "
                "core: this shows what it costs or gains on one small host, not how it scales "
                "across hosts. 2 ÷ 1: "
                f"{ratio_verdict(get(echo, 'two_frontends', 'ratios', 't2_rps'))}; stack CPU "
                "per request: "
                f"{ratio_verdict(get(echo, 'two_frontends', 'ratios', 't2_stack_us'))}.",
                "", *cfg_lines("echo", [("two_frontends", echo["two_frontends"]["label"])]), "",
                table(["front ends", "echo req/s (wrk -t2)", "÷", "p50", "p99",
                       "stack CPU µs/request", "÷", "connections per front end"], rows), ""]
        return out


# --- plots --------------------------------------------------------------------------------

def terminal():
    for term in ("pngcairo size 1000,600 font ',10'", "png size 1000,600"):
        try:
            ok = subprocess.run(["gnuplot", "-e", f"set terminal {term}"],
                                capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return None
        if ok:
            return term
    return None


def block(name, rows):
    return [f"${name} << EOD"] + [" ".join(str(v) for v in r) for r in rows] + ["EOD"]


def series_plot(path, title, xlabel, ylabel, series, *, logx=False, logy=True, xtics=None,
                term="png"):
    """series: [(title, [(x, y), ...])]; writes path.gp and renders path."""
    series = [(t, pts) for t, pts in series if any(y is not None for _, y in pts)]
    if not series:
        return False
    script = [f"set terminal {term}", f"set output '{os.path.basename(path)}'",
              f"set title '{title}'", f"set xlabel '{xlabel}'", f"set ylabel '{ylabel}'",
              "set grid", "set key outside right top", "set datafile missing '?'"]
    if logx:
        script.append("set logscale x")
    if logy:
        script.append("set logscale y")
    if xtics:
        script.append("set xtics (" + ", ".join(f"'{lbl}' {x}" for lbl, x in xtics) + ")")
        xs = [x for _, x in xtics]
        script.append(f"set xrange [{min(xs) - 0.3}:{max(xs) + 0.3}]")
    else:
        xs = sorted({x for _, pts in series for x, _ in pts})
        script.append("set xtics (" + ", ".join(f"'{x:g}' {x}" for x in xs) + ")")
        if logx and xs:
            script.append(f"set xrange [{xs[0] / 1.5}:{xs[-1] * 1.5}]")
    plots, colours = [], {}
    for i, (t, pts) in enumerate(series):
        script += block(f"d{i}", [(x, "?" if y is None else f"{y:.6g}") for x, y in pts])
        # One colour per condition, the same for both stacks; the peer's lines are dashed.
        stack, _, condition = t.partition(" ")
        colour = colours.setdefault(condition, len(colours) + 1)
        dash, point = (2, 6) if stack == "peer" else (1, 7)
        plots.append(f"$d{i} using 1:2 with linespoints lw 2 lc {colour} dt {dash} pt {point} "
                     f"title '{t}'")
    script.append("plot " + ", \\\n     ".join(plots))
    gp = path[:-4] + ".gp"
    with open(gp, "w") as f:
        f.write("\n".join(script) + "\n")
    code, out = run_bounded(["gnuplot", os.path.basename(gp)], 60, cwd=os.path.dirname(gp))
    if code != 0:
        raise RuntimeError(f"gnuplot {gp} failed: {out[-500:]}")
    return True


def make_plots(run, outdir):
    term = terminal()
    if term is None:
        run.warn("gnuplot has no png terminal: no plots")
        return []
    res, plan = run.results, run.plan
    stacks = [s for s in STACKS if s[0] in plan.stacks]
    made = []
    pct_tics = [(p, i + 1) for i, p in enumerate(PCTS)]

    def pct_pts(r):
        return [(i + 1, attr(r, p)) for i, p in enumerate(PCTS)]

    def plot(name, title, *args, **kwargs):
        path = os.path.join(outdir, name)
        if series_plot(path, title, *args, term=term, **kwargs):
            made.append((name, title))

    # latency percentiles per scenario
    s = []
    for name, label in stacks:
        for c in plan.echo_connections:
            s.append((f"{label} echo c{c}", pct_pts(get(res, "a", name, "echo", c))))
        s.append((f"{label} /now c{plan.baseline_connections}", pct_pts(get(res, "a", name, "now"))))
    plot("latency_a_echo.png", "a. POST /jobs/echo and GET /now latency", "percentile",
         "latency (ms)", s, xtics=pct_tics)
    s = []
    for name, label in stacks:
        for k in plan.ks:
            for phase in ("held", "churn"):
                s.append((f"{label} K={k} {phase}", pct_pts(get(res, "b", name, k, phase, "now"))))
    plot("latency_b_now_under_load.png", "b. GET /now latency while K slow jobs are in flight",
         "percentile", "latency (ms)", s, xtics=pct_tics)
    s = []
    for name, label in stacks:
        for c in plan.slow_connections:
            s.append((f"{label} sleep100 c{c}", pct_pts(get(res, "c", name, c, "wrk"))))
    plot("latency_c_slow_jobs.png", "c. POST /jobs/sleep 100 ms latency", "percentile",
         "latency (ms)", s, xtics=pct_tics)
    s = []
    for name, label in stacks:
        for n in plan.worker_counts:
            for task in ("echo", "hash"):
                s.append((f"{label} {task} {n}w", pct_pts(get(res, "d", name, n, task))))
    plot("latency_d_scaling.png", "d. echo and hash latency by worker processes", "percentile",
         "latency (ms)", s, xtics=pct_tics)

    # throughput vs connections
    s = []
    for name, label in stacks:
        s.append((f"{label} POST /jobs/echo", [(c, attr(get(res, "a", name, "echo", c), "rps"))
                                               for c in plan.echo_connections]))
        s.append((f"{label} GET /now baseline", [(plan.baseline_connections,
                                                  attr(get(res, "a", name, "now"), "rps"))]))
    for name, label in stacks:
        s.append((f"{label} POST /jobs/sleep 100ms", [
            (c, attr(get(res, "c", name, c, "wrk"), "rps")) for c in plan.slow_connections]))
    plot("throughput_vs_connections.png", "Throughput vs connections (a and c)",
         "connections", "requests/s", s, logx=True)
    s = []
    for name, label in stacks:
        for task in ("echo", "hash"):
            s.append((f"{label} {task}", [(n, attr(get(res, "d", name, n, task), "rps"))
                                          for n in plan.worker_counts]))
    plot("throughput_vs_workers.png", "d. Throughput vs worker processes", "worker processes",
         "requests/s", s, logx=True)
    s = []
    for name, label in stacks:
        for phase in ("held", "churn"):
            s.append((f"{label} {phase}", [(k, attr(get(res, "b", name, k, phase, "now"), "p99"))
                                           for k in plan.ks]))
    plot("now_p99_vs_k.png", "b. GET /now p99 vs K slow jobs in flight", "K (slow jobs in flight)",
         "p99 latency (ms)", s, logx=True)
    f = get(res, "f", "monsoon")
    if f:
        s = []
        for group, key, base, figure, title in SCALE_OUT_RATIOS:
            pts = scenarios.ratios(f[group][key], f[group][base], figure)
            s.append((f"Monsoon {title}", [(r + 1, y) for r, y in enumerate(pts)]))
        # One point a round: the spread of the points is the run's noise.
        plot("scale_out_ratios.png", "f. Scale-out: ratio to the baseline, per round", "round",
             "ratio (same round)", s, logy=False)
    return made


# (group, configuration, baseline, figure, title) of the per-round ratios plotted for f.
SCALE_OUT_RATIOS = (
    ("credit", "via_one", "one", "jobs_per_s", "f1 sleep jobs/s, (ii)/(i)"),
    ("credit", "split", "one", "jobs_per_s", "f1 sleep jobs/s, (iii)/(i)"),
    ("echo", "two", "one", "rps", "f2 echo req/s, 2 brokers/1"),
    ("echo", "two", "one", "now_p99", "f2 /now p99, 2 brokers/1"),
    ("echo", "brokerless", "one", "rps", "f3 echo req/s, brokerless/broker"),
    ("echo", "brokerless", "one", "now_p99", "f3 /now p99, brokerless/broker"),
    ("echo", "two_frontends", "one", "t2_rps", "f4 echo req/s, 2 front ends/1"),
)
