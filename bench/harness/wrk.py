"""Runs wrk and parses its --latency report.

Every wrk run is bounded twice: by its own -d, and by a subprocess timeout of
-d plus a margin, after which it is killed by PID. Background runs (the slow
load of scenario b) are ended early with SIGINT, on which wrk stops and still
prints its report.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import signal
import subprocess
import time

from procs import REGISTRY, rel

WRK_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "wrk")
POST_JSON = os.path.join(WRK_DIR, "post_json.lua")

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_NUM_UNIT = r"([0-9.]+)(us|ms|s|m|h)"


@dataclasses.dataclass
class WrkResult:
    command: str
    output: str
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50: float | None = None  # milliseconds
    p75: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0
    non2xx: int = 0
    parsed: bool = False

    @property
    def errors(self):
        return (self.connect_errors + self.read_errors + self.write_errors
                + self.timeouts + self.non2xx)

    @property
    def error_rate(self):
        attempts = self.requests + self.connect_errors + self.timeouts
        return self.errors / attempts if attempts else 0.0

    def percentiles(self):
        return {"p50": self.p50, "p75": self.p75, "p90": self.p90, "p99": self.p99}

    def to_json(self):
        out = dataclasses.asdict(self)
        out.pop("output")
        out["errors"] = self.errors
        out["error_rate"] = self.error_rate
        return out

    def error_summary(self):
        parts = []
        for label, value in (("connect", self.connect_errors), ("read", self.read_errors),
                             ("write", self.write_errors), ("timeout", self.timeouts),
                             ("non-2xx", self.non2xx)):
            if value:
                parts.append(f"{label} {value}")
        return ", ".join(parts) or "none"


def attr(r, name):
    """A figure of a WrkResult (rps, p99, requests...), or None when there is no parsed one."""
    return getattr(r, name) if r is not None and r.parsed else None


def _ms(number, unit):
    return float(number) * _TIME_UNITS[unit]


def parse(command, output):
    """Parses wrk's text report. parsed is False when no summary was found."""
    result = WrkResult(command=command, output=output)
    m = re.search(r"^\s*Latency\s+" + _NUM_UNIT + r"\s+" + _NUM_UNIT + r"\s+" + _NUM_UNIT,
                  output, re.M)
    if m:
        result.max = _ms(m.group(5), m.group(6))
    for pct in (50, 75, 90, 99):
        m = re.search(rf"^\s*{pct}%\s+" + _NUM_UNIT + r"\s*$", output, re.M)
        if m:
            setattr(result, f"p{pct}", _ms(m.group(1), m.group(2)))
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h)", output, re.M)
    if m:
        result.requests = int(m.group(1))
        result.seconds = _ms(m.group(2), m.group(3)) / 1e3
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.M)
    if m:
        result.rps = float(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        (result.connect_errors, result.read_errors, result.write_errors,
         result.timeouts) = (int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if m:
        result.non2xx = int(m.group(1))
    if result.requests == 0:  # wrk prints zeros: there is no latency to report
        result.p50 = result.p75 = result.p90 = result.p99 = result.max = None
    result.parsed = bool(re.search(r"^Requests/sec:", output, re.M)) and (
        result.requests == 0 or result.p50 is not None)
    return result


def command(url, connections, seconds, *, body=None, timeout_s=10, latency=True, threads=1):
    """The argv of one wrk run: `threads` threads (one unless told), keep-alive
    connections, POST when body is given."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s",
            "--timeout", f"{int(timeout_s)}s"]
    if latency:
        argv.append("--latency")
    if body is not None:
        argv += ["-s", POST_JSON]
    argv.append(url)
    if body is not None:
        argv += ["--", body]
    return argv


def display(argv):
    return " ".join(shlex.quote(rel(a)) for a in argv)


def run(argv, log):
    """Runs wrk to completion (bounded) and returns the parsed result."""
    bg = start(argv, log)
    return bg.wait()


class Background:
    """A wrk run in the background: stop() ends it early with SIGINT."""

    def __init__(self, argv, log):
        self.argv = argv
        self.log = log
        self.seconds = _duration(argv)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        REGISTRY.add(self.proc)

    def running(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        return self.wait()

    def wait(self):
        limit = self.started + self.seconds + 30
        try:
            out, _ = self.proc.communicate(timeout=max(1.0, limit - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            out += "\n[harness] wrk exceeded its time bound and was killed\n"
        except BaseException:  # interrupted: wrk must not outlive the harness
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            REGISTRY.discard(self.proc)
        shown = display(self.argv)
        self.log(shown, out)
        return parse(shown, out)


def start(argv, log):
    return Background(argv, log)


def _duration(argv):
    for a in argv:
        m = re.fullmatch(r"-d(\d+)s", a)
        if m:
            return int(m.group(1))
    return 60


def version():
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"
