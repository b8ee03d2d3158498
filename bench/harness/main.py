"""bench/run: Monsoon vs Tornado + Celery + RabbitMQ, measured with wrk in one run.

See bench/README.md. Usage: bench/run [--quick] [--duration S] [--out DIR] ...
"""

import argparse
import contextlib
import datetime
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
import report  # noqa: E402
import scenarios  # noqa: E402
import system  # noqa: E402
import wrk  # noqa: E402
from procs import REPO  # noqa: E402
from stacks import MonsoonStack, PeerStack, StackError  # noqa: E402

MAX_ERROR_RATE = 0.03  # a wrk run with more failed requests than this fails the check


def hms(seconds):
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Run:
    def __init__(self, plan, outdir, workdir, invocation):
        self.plan = plan
        self.outdir = outdir
        self.workdir = workdir
        self.invocation = invocation
        self.date = datetime.date.today().isoformat()
        self.t0 = time.monotonic()
        self.results = {}
        self.commands = {}
        self.failures = []       # Monsoon or harness problems: the run fails
        self.peer_problems = []  # what went wrong with the peer: reported, it is a measurement
        self.warnings = []
        self.stacks = []
        self.machine = {}
        self.versions = {}
        self.nofile = 0
        self.raw = open(os.path.join(outdir, "raw.txt"), "w")
        self._dead_reported = set()
        # progress
        self.scenarios = []
        self.index = 0
        self.done_estimate = 0.0
        self.current = None
        self.current_steps = 0

    # --- logging and progress -------------------------------------------------------------
    def elapsed(self):
        return time.monotonic() - self.t0

    def elapsed_text(self):
        return hms(self.elapsed())

    def say(self, text):
        print(f"[{hms(self.elapsed())}] {text}", flush=True)

    def raw_log(self, command, output):
        self.raw.write(f"$ {command}\n{output.rstrip()}\n\n")
        self.raw.flush()

    def step(self, label):
        sc = self.current
        self.current_steps += 1
        total = sc.steps(self.plan)
        done = self.done_estimate + sc.estimate(self.plan) * (self.current_steps - 1) / max(total, 1)
        remaining = sum(s.estimate(self.plan) for s in self.scenarios[self.index - 1:]) - \
            sc.estimate(self.plan) * (self.current_steps - 1) / max(total, 1)
        # Once a quarter of the plan is done, scale the rest by how fast it has gone.
        since = self.elapsed() - self.scenario_t0_offset
        planned = sum(s.estimate(self.plan) for s in self.scenarios)
        factor = min(2.0, max(0.7, since / done)) if done > planned / 4 else 1.0
        print(f"[{hms(self.elapsed())} elapsed, ETA ~{hms(remaining * factor)}] "
              f"scenario {self.index} of {len(self.scenarios)} ({sc.key}), "
              f"step {self.current_steps}/{total}: {label}", flush=True)

    def warn(self, text):
        self.warnings.append(text)
        self.say(f"note: {text}")

    def fail(self, stack, scen, text):
        if stack is not None and stack.name == "peer":
            self.peer_problems.append(f"{scen}: {text}")
            self.say(f"PEER PROBLEM: {scen}: {text}")
        else:
            msg = f"{scen}: {stack.label if stack else 'harness'}: {text}"
            self.failures.append(msg)
            self.say(f"FAILED: {msg}")

    # --- measurements ---------------------------------------------------------------------
    def check(self, stack, scen, r):
        if not r.parsed:
            self.fail(stack, scen, f"no numbers parsed from `{r.command}`")
        elif r.requests == 0:
            self.fail(stack, scen, f"not one reply in {r.seconds:.0f} s to `{r.command}`")
        elif r.error_rate > MAX_ERROR_RATE:
            self.fail(stack, scen, f"{100 * r.error_rate:.1f}% of requests failed "
                                   f"({r.error_summary()}) in `{r.command}`")
        for d in stack.dead():
            if (stack.name, d) not in self._dead_reported:
                self._dead_reported.add((stack.name, d))
                self.fail(stack, scen, f"process died: {d}")

    def measure(self, stack, scen, argv, during=None):
        """Runs wrk to completion and checks its result; during(), if given, is called
        while wrk runs."""
        self.commands.setdefault(scen, []).append(wrk.display(argv))
        bg = wrk.start(argv, self.raw_log)
        try:
            if during is not None:
                during()
        finally:
            r = bg.wait()
        self.check(stack, scen, r)
        if r.parsed and r.requests:
            self.say(f"  {r.rps:,.0f} req/s, p50 {report.f_ms(r.p50)}, p99 {report.f_ms(r.p99)}, "
                     f"max {report.f_ms(r.max)}, errors {r.error_summary()}")
        return r

    def warm(self, stack, argv):
        self.commands.setdefault(self.current.key, []).append(wrk.display(argv) + "  # warm-up")
        wrk.run(argv, self.raw_log)

    def start_background(self, stack, scen, argv):
        self.commands.setdefault(scen, []).append(wrk.display(argv) + " &  # background load")
        return wrk.start(argv, self.raw_log)

    @contextlib.contextmanager
    def stack_session(self, stack, scen, cfg, out):
        """Starts the stack with cfg; on exit, records each process's VmHWM and stops it."""
        stack.commands = self.commands.setdefault(scen, [])
        try:
            stack.start(**cfg)
        except StackError as e:
            out["error"] = str(e)
            self.fail(stack, scen, f"could not start ({cfg}): {e}")
            stack.stop()
            yield False
            return
        out["config"] = stack.config
        self._dead_reported = {x for x in self._dead_reported if x[0] != stack.name}
        try:
            yield True
        finally:
            for d in stack.dead():
                if (stack.name, d) not in self._dead_reported:
                    self._dead_reported.add((stack.name, d))
                    self.fail(stack, scen, f"process died: {d}")
            out["peaks"] = peaks(stack)
            stack.stop()

    # --- the run --------------------------------------------------------------------------
    def run_scenarios(self, selected):
        self.scenarios = selected
        total = sum(s.estimate(self.plan) for s in selected)
        self.say(f"{len(selected)} scenarios, about {hms(total)} of measuring "
                 f"({self.plan.duration} s per measurement)")
        self.scenario_t0_offset = self.elapsed()
        for i, sc in enumerate(selected, 1):
            self.index, self.current, self.current_steps = i, sc, 0
            self.say(f"== scenario {i} of {len(selected)}: {sc.key}. {sc.title}")
            sc.run(self)
            self.done_estimate += sc.estimate(self.plan)


def peaks(stack):
    """(label, pid, VmHWM kB) for every live process of the stack, labels made unique."""
    out, counts = [], {}
    for pid, role in stack.processes():
        label = role
        counts[label] = counts.get(label, 0) + 1
        if counts[label] > 1:
            label = f"{label} #{counts[label]}"
        out.append((label, pid, procs.status_kb(pid, "VmHWM")))
    return out


def to_jsonable(x):
    if isinstance(x, wrk.WrkResult):
        return x.to_json()
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    return x


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmarks Monsoon against Tornado + Celery + RabbitMQ (the peer) with wrk "
                    "on loopback and writes bench/results/<date>/report.md and plots.")
    p.add_argument("--quick", action="store_true",
                   help="1-2 minute smoke run of Monsoon alone (subset of scenarios, K=100) "
                        "into a temporary directory; exits non-zero if anything failed")
    p.add_argument("--duration", type=int, default=None,
                   help="seconds per measurement (default 6, or 5 with --quick)")
    p.add_argument("--out", help="output directory (default bench/results/<YYYY-MM-DD>, "
                                 "or a new temporary directory with --quick)")
    p.add_argument("--scenarios", default="abcdf",
                   help="which of a,b,c,d,f to run (default all; e is computed from a and b)")
    p.add_argument("--ks", help="comma-separated K values for scenario b (default 100,1000,10000; "
                                "100 with --quick)")
    p.add_argument("--rounds", type=int, default=None,
                   help="alternating rounds of scenario f (default 5, or 1 with --quick)")
    p.add_argument("--no-peer", action="store_true", help="measure Monsoon alone")
    p.add_argument("--no-build", action="store_true", help="use build/bin as it is")
    p.add_argument("--no-install", action="store_true",
                   help="do not apt-get install wrk and gnuplot-nox")
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 5 if args.quick else 6
    if args.duration < 1:
        p.error("--duration must be at least 1")
    if args.rounds is not None and args.rounds < 1:
        p.error("--rounds must be at least 1")
    bad = set(args.scenarios) - set("abcdef,")
    if bad:
        p.error(f"unknown scenario(s): {''.join(sorted(bad))}")
    if args.ks and not all(k.strip().isdigit() and int(k) > 0 for k in args.ks.split(",")):
        p.error("--ks takes positive integers separated by commas")
    return args


def main(argv):
    args = parse_args(argv)
    invocation = "bench/run" + ("" if not argv else " " + shlex.join(argv))
    with_peer = not args.quick and not args.no_peer
    plan = scenarios.Plan(args.quick, args.duration, ["monsoon"] + (["peer"] if with_peer else []))
    if args.ks:
        plan.ks = [int(k) for k in args.ks.split(",")]
    if args.rounds:
        plan.scale_rounds = args.rounds

    if args.out:
        outdir = os.path.abspath(args.out)
    elif args.quick:
        outdir = tempfile.mkdtemp(prefix="monsoon-bench-quick-")
    else:
        outdir = os.path.join(REPO, "bench", "results", datetime.date.today().isoformat())
    os.makedirs(outdir, exist_ok=True)
    for name in os.listdir(outdir):  # what an earlier run of the same day wrote
        if name in ("report.md", "results.json", "raw.txt") or name.endswith((".png", ".gp")):
            os.remove(os.path.join(outdir, name))
    workdir = tempfile.mkdtemp(prefix="monsoon-bench-work-")
    os.chmod(workdir, 0o755)  # the peer's RabbitMQ runs as user rabbitmq under it
    run = Run(plan, outdir, workdir, invocation)

    interrupted = []

    def on_signal(signum, _frame):
        # The first signal unwinds the run (stopping what it started); later ones are
        # ignored so that the clean-up itself is not cut short.
        if interrupted:
            return
        interrupted.append(signum)
        print(f"\n[bench] {signal.Signals(signum).name}: stopping the processes it started...",
              file=sys.stderr, flush=True)
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    stacks = []
    code = 0
    try:
        run.nofile = system.raise_nofile()
        run.say(f"open files limit: {run.nofile}")
        if not args.no_install:
            system.ensure_packages(["wrk", "gnuplot-nox"], run.say)
        if not args.no_build:
            system.build_monsoon(run.say)
        stacks.append(MonsoonStack(workdir, []))
        if with_peer:
            if not PeerStack.available():
                raise system.SetupError(
                    "bench/peers/tornado_celery/peer.sh is missing (use --no-peer to measure "
                    "Monsoon alone)")
            peer = PeerStack(workdir, run.commands.setdefault("setup", []), run.say,
                             lambda text: run.fail(peer, run.current.key if run.current
                                                   else "setup", text))
            stacks.append(peer)
            try:
                installer = peer.install()
            except StackError as e:
                raise system.SetupError(str(e))
        run.stacks = stacks
        run.machine = system.machine()
        if run.machine["loadavg"] > 0.5 * run.machine["nproc"]:
            run.warn(f"load average {run.machine['loadavg']:.1f} at start on "
                     f"{run.machine['nproc']} cores: other work was running, figures are noisy")
        run.versions.update({
            "Monsoon": system.monsoon_version(),
            "wrk": wrk.version(),
            "gnuplot": system.tool_version(["gnuplot", "--version"]),
            "compiler": system.tool_version(["c++", "--version"]),
        })
        if with_peer:
            run.versions["peer packages"] = installer
            run.versions["peer (peer.sh versions)"] = stacks[1].versions()
        selected = [s for s in scenarios.ALL if s.key in args.scenarios]
        run.run_scenarios(selected)
    except KeyboardInterrupt:
        code = 130
    except system.SetupError as e:
        run.failures.append(f"setup: {e}")
        run.say(f"FAILED: setup: {e}")
        code = 1
    except Exception:  # noqa: BLE001 - report, clean up, fail
        text = traceback.format_exc()
        run.failures.append("harness error:\n" + text)
        run.say("FAILED: harness error\n" + text)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.REGISTRY.kill_all()
        for s in stacks:
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001
                run.say(f"stopping {s.label}: {e}")

    if code == 130:
        run.say(f"interrupted; partial output in {outdir}, process logs in {workdir}")
        return code

    measured = any(isinstance(v, wrk.WrkResult) and v.parsed
                   for v in _walk(run.results))
    if not measured and not run.failures:
        run.failures.append("no numbers were measured")
    if run.results:
        plots = []
        try:
            plots = report.make_plots(run, outdir)
        except Exception as e:  # noqa: BLE001
            run.failures.append(f"plots: {e}")
        report.Report(run).write(os.path.join(outdir, "report.md"), plots)
        with open(os.path.join(outdir, "results.json"), "w") as f:
            json.dump({"plan": vars(plan), "machine": run.machine, "versions": run.versions,
                       "results": to_jsonable(run.results), "failures": run.failures,
                       "peer_problems": run.peer_problems, "warnings": run.warnings},
                      f, indent=1, default=str)
    run.raw.close()

    print()
    run.say(f"report: {os.path.join(outdir, 'report.md')}")
    for p in run.peer_problems:
        print(f"  peer problem: {p}")
    if run.failures or run.peer_problems:
        for f in run.failures:
            print(f"  FAILED: {f}")
        print(f"  process logs kept in {workdir}")
    if run.failures:
        return 1
    if not run.peer_problems:
        shutil.rmtree(workdir, ignore_errors=True)
    run.say("all checks passed" if args.quick else "done")
    return code


def _walk(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _walk(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _walk(v)
    else:
        yield x


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
