"""The machine: packages, the Monsoon build, limits, facts for the report, HTTP probes."""

import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

from procs import REPO, run_bounded

BIN_DIR = os.path.join(REPO, "build", "bin")


class SetupError(Exception):
    pass


def ensure_packages(packages, log):
    """apt-get installs the Debian packages that are missing (through sudo when not root)."""
    missing = []
    for package in packages:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                             capture_output=True, text=True)
        if out.stdout.strip() != "install ok installed":
            missing.append(package)
    if not missing:
        return
    sudo = []
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            raise SetupError(f"need root or sudo to install: {' '.join(missing)}")
        sudo = ["sudo"]
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    wait_lock = ["-o", "DPkg::Lock::Timeout=300"]
    for argv, bound in ((sudo + ["apt-get", *wait_lock, "update", "-qq"], 600),
                        (sudo + ["apt-get", *wait_lock, "install", "-y", "-qq",
                                 "--no-install-recommends", *missing], 900)):
        code, out = run_bounded(argv, bound, env=env)
        if code != 0:
            raise SetupError(f"{' '.join(argv)} failed:\n{out[-2000:]}")


def build_monsoon(log):
    """`make -C <repo> build`: installs build dependencies and (re)builds what is stale."""
    log("building Monsoon (make -C . build)")
    code, out = run_bounded(["make", "-C", REPO, "build"], 3600)
    if code != 0:
        raise SetupError(f"make -C {REPO} build failed:\n{out[-3000:]}")
    for name in ("monsoon-broker", "monsoon-worker", "monsoon-frontend"):
        if not os.access(os.path.join(BIN_DIR, name), os.X_OK):
            raise SetupError(f"{name} is missing from {BIN_DIR} after the build")


def raise_nofile():
    """ulimit -n to the hard limit (raising the hard limit first when root). Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if os.geteuid() == 0 and hard != resource.RLIM_INFINITY and hard < 65536:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                nr_open = int(f.read())
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, nr_open),) * 2)
            return min(65536, nr_open)
        except (OSError, ValueError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "loadavg": os.getloadavg()[0],
    }


def monsoon_version():
    def git(*args):
        out = subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""
    rev = git("rev-parse", "--short=12", "HEAD") or "unknown"
    # The run's own output (bench/results/) is not a change to what was measured.
    if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"):
        rev += " (with uncommitted changes)"
    return rev


def tool_version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        lines = (out.stdout + out.stderr).strip().splitlines()
        return lines[0].strip() if lines else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method, url, body=None, timeout=2.0):
    """(status, headers, body text); status 0 when the connection failed."""
    data = body.encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode(errors="replace")
    except (OSError, ValueError):
        return 0, {}, ""


def pending(base_url):
    """The "pending" count of GET /healthz, or None when the server exposes none."""
    status, _, text = http("GET", base_url + "/healthz", timeout=1.0)
    if status == 0:
        return None
    try:
        value = json.loads(text).get("pending")
        return int(value) if value is not None else None
    except (ValueError, AttributeError, TypeError):
        return None
