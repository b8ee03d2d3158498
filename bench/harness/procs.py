"""Processes the harness starts, and what /proc says about them.

Every child is started in its own session (so a terminal's Ctrl-C reaches
only the harness, which then stops things in order) and stopped by PID:
SIGTERM, a bounded wait, then SIGKILL. A PID is signalled only while its
start time still matches the one recorded when it was adopted, so a recycled
PID is never hit. Nothing here looks processes up by name.
"""

import os
import resource
import signal
import subprocess
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rel(path):
    """A path shown relative to the repository root when it lies inside it."""
    if isinstance(path, str) and path.startswith(REPO + os.sep):
        return os.path.relpath(path, REPO)
    return path


def start_time(pid):
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid, started=None):
    st = start_time(pid)
    if st is None:
        return False
    if started is not None and st != started:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def status_kb(pid, field):
    """A kB field of /proc/PID/status (VmRSS, VmHWM), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


TCP_ESTABLISHED, TCP_LISTEN = "01", "0A"  # the st column of /proc/net/tcp


def tcp_sockets(port, state):
    """Socket inodes of the TCP sockets in `state` whose local port is `port`, from
    /proc/net/tcp{,6}; a reading may count a socket twice or miss one while thousands of
    them change."""
    inodes = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.append(fields[9])
        except (OSError, StopIteration, IndexError, ValueError):
            pass
    return inodes


def established(port):
    """Established TCP connections whose local port is `port` (server side), from `ss`
    (a netlink snapshot) when it is installed, else from /proc/net/tcp{,6}."""
    try:
        out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return sum(1 for line in out.stdout.splitlines() if line.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return len(tcp_sockets(port, TCP_ESTABLISHED))


def established_by_pid(port, pids):
    """How many of the established connections on local port `port` each process holds
    (a socket's inode among its /proc/PID/fd links): a list in the order of `pids`."""
    inodes = {f"socket:[{i}]" for i in tcp_sockets(port, TCP_ESTABLISHED)}
    counts = []
    for pid in pids:
        n = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    n += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
                except OSError:
                    pass
        except OSError:
            pass
        counts.append(n)
    return counts


def cpu_seconds(pid):
    """User + system CPU time a process (all its threads) has used so far, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


def _machine_cpu():
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


class CpuMeter:
    """Where the CPU went during a `with` block: the given processes (a stack), the
    harness and the children it reaped meanwhile (wrk: no other child exits during a
    measurement), and the rest of the machine (/proc/stat's busy time minus both), which
    is the noise that other work adds. A process that exits meanwhile is left out."""

    def __init__(self, pids):
        self.pids = list(pids)
        self.result = None

    @staticmethod
    def _harness():
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def _snapshot(self):
        return (time.monotonic(), {p: cpu_seconds(p) for p in self.pids}, self._harness(),
                _machine_cpu())

    def __enter__(self):
        self._before = self._snapshot()
        return self

    def __exit__(self, *exc):
        (t0, stack0, harness0, (busy0, steal0)) = self._before
        (t1, stack1, harness1, (busy1, steal1)) = self._snapshot()
        stack = sum(stack1[p] - stack0[p] for p in self.pids
                    if stack0[p] is not None and stack1[p] is not None)
        harness = harness1 - harness0
        wall = max(t1 - t0, 1e-9)
        self.result = {"wall_s": wall, "stack_s": stack, "load_generator_s": harness,
                       "others_cores": max(0.0, busy1 - busy0 - stack - harness) / wall,
                       "steal_cores": (steal1 - steal0) / wall}

    def per_request_us(self, requests):
        """The stack's CPU time per request in microseconds, or None without requests."""
        if not self.result or not requests:
            return None
        return self.result["stack_s"] * 1e6 / requests


class Tracked:
    """A process the harness is responsible for: its PID and start time."""

    def __init__(self, pid, role, popen=None):
        self.pid = pid
        self.role = role
        self.popen = popen
        self.started = start_time(pid)

    def alive(self):
        if self.popen is not None and self.popen.poll() is not None:
            return False
        return alive(self.pid, self.started)

    def signal(self, sig):
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def stop_all(tracked, grace_s=5.0):
    """SIGTERM each tracked process, wait up to grace_s, SIGKILL the rest; reap ours."""
    for t in tracked:
        t.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(t.alive() for t in tracked):
        time.sleep(0.05)
    for t in tracked:
        t.signal(signal.SIGKILL)
    for t in tracked:
        if t.popen is not None:
            try:
                t.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


class Registry:
    """Short-lived children (wrk, helper scripts) to kill if the harness is interrupted."""

    def __init__(self):
        self._lock = threading.Lock()
        self._procs = set()

    def add(self, proc):
        with self._lock:
            self._procs.add(proc)

    def discard(self, proc):
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self):
        with self._lock:
            procs = list(self._procs)
            self._procs.clear()
        for p in procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


REGISTRY = Registry()


def run_bounded(argv, timeout_s, **kwargs):
    """subprocess.run with a time bound; the child is killed by PID when it passes it."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kwargs)
    REGISTRY.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return None, out + f"\n[harness] timed out after {timeout_s:.0f} s and was killed\n"
    except BaseException:  # interrupted: the child must not outlive the harness
        proc.kill()
        proc.wait()
        raise
    finally:
        REGISTRY.discard(proc)


class RssSampler:
    """Samples VmRSS of some PIDs every interval_s in a thread; keeps each one's maximum (kB)."""

    def __init__(self, pids, interval_s=0.2):
        self.pids = list(pids)
        self.interval_s = interval_s
        self.max_kb = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self):
        for pid in self.pids:
            kb = status_kb(pid, "VmRSS")
            if kb is not None and kb > self.max_kb.get(pid, 0):
                self.max_kb[pid] = kb

    def _run(self):
        while True:
            self._sample()
            if self._stop.wait(self.interval_s):
                self._sample()
                return
