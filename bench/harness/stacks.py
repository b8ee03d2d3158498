"""The two stacks under test, behind one interface.

MonsoonStack starts monsoon-broker, N monsoon-worker and monsoon-frontend
itself and stops them by PID. PeerStack drives
bench/peers/tornado_celery/peer.sh (start/stop/pids/versions); after
`peer.sh stop` it still SIGKILLs, by PID, any process `peer.sh pids` listed
that outlived it.
"""

import os
import re
import shlex
import subprocess
import time

import procs
import system
from procs import REPO, Tracked, rel, run_bounded

PEER_SH = os.path.join(REPO, "bench", "peers", "tornado_celery", "peer.sh")


class StackError(Exception):
    pass


def _shown(argv):
    return " ".join(shlex.quote(rel(a)) for a in argv)


class MonsoonStack:
    name = "monsoon"
    label = "Monsoon"

    def __init__(self, workdir, commands):
        self.workdir = workdir
        self.commands = commands  # list the report shows: every command this stack ran
        self.tracked = []
        self.url = None
        self.port = None
        self.config = None
        self.worker_processes = 0
        self.has_pending = False  # GET /healthz reports a "pending" count
        self.broker_stats = []  # after stop(): each broker's final counters (None if unread)
        self._run_dir = None

    @staticmethod
    def describe(workers, slots, threads=None, brokers=1, frontend_brokers=None, frontends=1):
        pools = (f"{slots} slots (thread and async pools alike)" if threads is None else
                 f"{slots} async slots and {threads} thread slots")
        if brokers == 0:
            route = "no broker: the front end hosts the dispatcher (--worker-endpoint)"
        elif brokers == 1:
            route = "1 broker"
        else:
            route = (f"{brokers} brokers, every worker registered with each, the front end "
                     + ("using all of them" if frontend_brokers in (None, brokers) else
                        f"using {frontend_brokers} of them"))
        fronts = ("1 front end" if frontends == 1 else
                  f"{frontends} front-end processes sharing the port (--reuse-port)")
        return f"{workers} worker process(es) x {pools}; {route}; {fronts}, 1 I/O thread each"

    def start(self, workers, slots, max_connections=20000, threads=None, brokers=1,
              frontend_brokers=None, frontends=1, **_):
        """`slots` for both pools unless `threads` sizes the thread pool apart (the
        sleep scenarios: sleep is an async task, thread slots would only cost memory).
        The topology: `brokers` broker processes (0: the front end hosts the dispatcher),
        every worker registered with each, the front end using the first
        `frontend_brokers` of them (default all); `frontends` front-end processes share
        the port with --reuse-port.
        REQUIRES: 1 <= frontend_brokers <= brokers; frontends == 1 when brokers == 0."""
        frontend_brokers = brokers if frontend_brokers is None else frontend_brokers
        if brokers == 0 and frontends != 1:
            raise ValueError("brokerless runs one front end: it binds the workers' endpoint")
        if brokers and not 1 <= frontend_brokers <= brokers:
            raise ValueError(f"frontend_brokers {frontend_brokers} of {brokers} brokers")
        self.config = self.describe(workers, slots, threads, brokers, frontend_brokers,
                                    frontends)
        self.worker_processes = workers
        self.broker_stats = []
        bin_dir = system.BIN_DIR
        self.port = system.free_port()
        self._run_dir = run_dir = os.path.join(self.workdir, f"monsoon-{self.port}")
        os.makedirs(run_dir, exist_ok=True)
        specs, clients, worker_eps = [], [], []
        for i in range(1, brokers + 1):
            clients.append(f"tcp://127.0.0.1:{system.free_port()}")
            worker_eps.append(f"tcp://127.0.0.1:{system.free_port()}")
            # info: its only lines are start, workers stopping and the final counters.
            specs.append(("broker" if brokers == 1 else f"broker-{i}", [
                os.path.join(bin_dir, "monsoon-broker"), "--client-endpoint", clients[-1],
                "--worker-endpoint", worker_eps[-1], "--log-level", "info"]))
        if brokers == 0:
            worker_eps.append(f"tcp://127.0.0.1:{system.free_port()}")
            upstream = ["--worker-endpoint", worker_eps[0]]
        else:
            upstream = ["--broker", ",".join(clients[:frontend_brokers])]
        names = []
        for i in range(1, workers + 1):
            name = f"bench-w{i}"
            names.append(name)
            specs.append((f"worker-{i}", [
                os.path.join(bin_dir, "monsoon-worker"),
                *(arg for ep in worker_eps for arg in ("--broker", ep)),
                "--concurrency", str(slots if threads is None else threads),
                "--async-concurrency", str(slots),
                "--name", name,
                "--db-path", os.path.join(run_dir, "demo.sqlite3"),
                "--drain-timeout-ms", "1000", "--cancel-grace-ms", "500",
                "--log-level", "warn"]))
        for i in range(1, frontends + 1):
            specs.append(("frontend" if frontends == 1 else f"frontend-{i}", [
                os.path.join(bin_dir, "monsoon-frontend"), "--host", "127.0.0.1",
                "--port", str(self.port), *upstream,
                *(["--reuse-port"] if frontends > 1 else []),
                "--max-connections", str(max_connections), "--drain-timeout-ms", "1000",
                "--log-level", "warn"]))
        self.url = f"http://127.0.0.1:{self.port}"
        for role, argv in specs:
            self.commands.append(_shown(argv) + " &")
            log = open(os.path.join(run_dir, f"{role}.log"), "w")
            try:
                popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=run_dir,
                                         start_new_session=True)
            finally:
                log.close()
            self.tracked.append(Tracked(popen.pid, role, popen))
        self._wait_ready(set(names), frontends, run_dir)
        self.has_pending = self.pending() is not None

    def _wait_ready(self, names, frontends, run_dir):
        """Every front end listening, and every worker registered: sequential echo jobs go
        to the least recently used worker, so once all are registered, consecutive replies
        name each of them."""
        seen = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            dead = self.dead()
            if dead:
                raise StackError(f"Monsoon process(es) exited during start-up: {dead}; "
                                 f"logs in {run_dir}")
            if len(procs.tcp_sockets(self.port, procs.TCP_LISTEN)) < frontends:
                time.sleep(0.05)
                continue
            status, headers, _ = system.http("POST", self.url + "/jobs/echo", "1")
            if status == 200:
                seen.add(headers.get("X-Monsoon-Worker", ""))
                if names <= seen:
                    return
            else:
                time.sleep(0.05)
        raise StackError(f"Monsoon not ready after 20 s (workers seen: {sorted(seen)}); "
                         f"logs in {run_dir}")

    def processes(self):
        return [(t.pid, t.role) for t in self.tracked]

    def frontend_pids(self):
        return [t.pid for t in self.tracked if t.role.startswith("frontend")]

    def frontend_pid(self):
        """The front end's PID (the first one's when there are several), or None."""
        return next(iter(self.frontend_pids()), None)

    def dead(self):
        return [f"{t.role} (pid {t.pid})" for t in self.tracked if not t.alive()]

    def pending(self):
        return system.pending(self.url)

    def stop(self):
        """Stops every process; then reads each broker's final counters (broker_stats)."""
        if not self.tracked:
            return
        brokers = [t.role for t in self.tracked if t.role.startswith("broker")]
        procs.stop_all(self.tracked)
        self.tracked = []
        self.broker_stats = [broker_final_stats(os.path.join(self._run_dir, f"{role}.log"))
                             for role in brokers]


def broker_final_stats(log_path):
    """The counters of the broker's last words, `broker stopped: submitted=N ... refused=N
    credit_updates=N ...` (logged at info on SIGTERM), as a dict; None when absent."""
    try:
        with open(log_path, errors="replace") as f:
            lines = [line for line in f if "broker stopped:" in line]
    except OSError:
        return None
    if not lines:
        return None
    tail = lines[-1].split("broker stopped:", 1)[1]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", tail)}


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _peer_role(pid):
    cmd = procs.cmdline(pid).lower()
    name = procs.comm(pid).lower()
    if "app.py" in cmd:
        return "tornado app"
    if "epmd" in name:
        return "epmd"
    if any(s in name for s in ("beam", "erl_child", "inet_gethost")) or "rabbit" in cmd:
        return f"rabbitmq ({name})"
    if "celery" in cmd:
        parent = _ppid(pid)
        if parent and "celery" in procs.cmdline(parent).lower():
            return "celery pool child"
        return "celery worker"
    return name or "?"


def _children_map():
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


class PeerStack:
    name = "peer"
    label = "peer"

    def __init__(self, workdir, commands, log, problem):
        self.workdir = workdir
        self.commands = commands
        self.log = log
        self.problem = problem  # reports what went wrong with the peer
        self.tracked = []
        self.listed = []
        self.state_dir = None
        self.url = None
        self.port = None
        self.state_dir = None
        self.config = None
        self.worker_processes = 0
        self.has_pending = False
        self._starts = 0

    @staticmethod
    def available():
        return os.access(PEER_SH, os.X_OK) or os.path.isfile(PEER_SH)

    @staticmethod
    def _argv(*args):
        return ["bash", PEER_SH, *args]

    def versions(self):
        code, out = run_bounded(self._argv("versions"), 120)
        return out.strip() if code == 0 else f"peer.sh versions failed: {out.strip()[-500:]}"

    @staticmethod
    def supports_workers():
        """peer.sh start takes --workers N (N celery worker processes) in its usage."""
        try:
            with open(PEER_SH) as f:
                return "--workers" in f.read()
        except OSError:
            return False

    @staticmethod
    def install_command():
        """The peer's own installer, if it has one: `peer.sh deps|install` or an install script."""
        try:
            with open(PEER_SH) as f:
                text = f.read()
        except OSError:
            return None
        for sub in ("deps", "install"):
            if re.search(rf"^\s*{sub}\)", text, re.M):
                return ["bash", PEER_SH, sub]
        here = os.path.dirname(PEER_SH)
        for name in ("install-deps.sh", "install.sh"):
            if os.path.isfile(os.path.join(here, name)):
                return ["bash", os.path.join(here, name)]
        return None

    def install(self):
        argv = self.install_command()
        if argv is None:
            return "peer.sh has no installer; its packages must already be there"
        self.commands.append(_shown(argv))
        code, out = run_bounded(argv, 1800)
        if code != 0:
            raise StackError(f"{_shown(argv)} failed: {out.strip()[-1500:]}")
        return _shown(argv)

    def describe(self, pool, concurrency, workers):
        if pool == "threads":
            return (f"{workers} Celery worker process(es) (threads pool) x {concurrency} "
                    "threads, 1 Tornado process")
        return (f"{workers} Celery worker(s) with a prefork pool of {concurrency} "
                "process(es), 1 Tornado process")

    def start(self, pool, concurrency, workers=1, **_):
        if workers != 1 and not self.supports_workers():
            concurrency, workers = concurrency * workers, 1
        self.config = self.describe(pool, concurrency, workers)
        self.worker_processes = workers if pool == "threads" else workers * concurrency
        self._starts += 1
        self.port = system.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = os.path.join(self.workdir, f"peer-{self._starts}")
        os.makedirs(self.state_dir, exist_ok=True)
        argv = self._argv("start", self.state_dir, str(self.port), "--pool", pool,
                          "--concurrency", str(concurrency))
        if workers != 1:
            argv += ["--workers", str(workers)]
        self.commands.append(_shown(argv))
        # The first start may install the peer's packages: allow for it.
        bound = 1200 if self._starts == 1 else 300
        began = time.monotonic()
        code, out = run_bounded(argv, bound)
        with open(os.path.join(self.state_dir, "harness-start.log"), "w") as f:
            f.write(out)
        self._adopt()
        if code != 0:
            self.stop()
            raise StackError(f"peer.sh start exited {code}: {out.strip()[-1500:]}")
        if time.monotonic() - began > 60:
            self.log(f"peer.sh start took {time.monotonic() - began:.0f} s")
        self._wait_ready()

    def _list_pids(self):
        code, out = run_bounded(self._argv("pids", self.state_dir), 60)
        pids = []
        if code == 0:
            for line in out.split("\n"):
                for word in line.replace(",", " ").split():
                    if word.isdigit():
                        pids.append(int(word))
                        break
        return pids

    def _adopt(self):
        """Tracks what peer.sh pids lists, plus their descendants (e.g. prefork children)."""
        listed = self._list_pids()
        known = {t.pid for t in self.tracked}
        children = _children_map()
        todo = list(listed)
        while todo:
            pid = todo.pop()
            if pid in known or not procs.alive(pid):
                continue
            known.add(pid)
            t = Tracked(pid, _peer_role(pid))
            self.tracked.append(t)
            todo.extend(children.get(pid, []))
        self.listed = [t for t in self.tracked if t.pid in set(listed)]

    def _wait_ready(self):
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            dead = self.dead()
            if dead:
                raise StackError(f"peer process(es) exited during start-up: {dead}")
            if system.http("GET", self.url + "/now")[0] == 200 and \
                    system.http("POST", self.url + "/jobs/echo", "1", timeout=5)[0] == 200:
                self._adopt()
                self.has_pending = self.pending() is not None
                return
            time.sleep(0.2)
        raise StackError(f"peer not answering /now and /jobs/echo on {self.url} after 90 s")

    def processes(self):
        self._adopt()
        return [(t.pid, t.role) for t in self.tracked if t.alive()]

    def frontend_pid(self):
        fronts = [t.pid for t in self.tracked if t.role == "tornado app" and t.alive()]
        return fronts[0] if len(fronts) == 1 else None

    def dead(self):
        return [f"{t.role} (pid {t.pid})" for t in self.listed if not t.alive()]

    def pending(self):
        return system.pending(self.url)

    def stop(self):
        if self.state_dir is None:
            return
        argv = self._argv("stop", self.state_dir)
        self.commands.append(_shown(argv))
        code, out = run_bounded(argv, 120)
        if code != 0:
            self.problem(f"peer.sh stop exited {code}: {out.strip()[-500:]}")
        leftovers = [t for t in self.tracked if t.alive()]
        if leftovers:
            self.problem("peer.sh stop left " + ", ".join(f"{t.role} {t.pid}" for t in leftovers)
                     + "; stopping them by PID")
            procs.stop_all(leftovers, grace_s=3.0)
        self.tracked = []
        self.listed = []
        self.state_dir = None
