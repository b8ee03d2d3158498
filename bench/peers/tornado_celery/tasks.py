"""The peer's Celery app and tasks: Monsoon's built-in tasks, done in Celery.

Each task takes ONE positional argument, the job's args exactly as the HTTP
client sent them (any JSON value), and returns a JSON value, like a Monsoon
task. Invalid args raise BadRequest (the web app answers 400); any other
exception is a failed task (500).

Configuration comes from the environment (peer.sh sets it):
  PEER_BROKER_URL   amqp://guest:guest@127.0.0.1:<port>//  (loopback only)
  PEER_DB_PATH      the SQLite file of db.query (created with 1000 rows)
  PEER_PREFETCH     worker_prefetch_multiplier (default 0: no limit)
  PEER_DELIVERY     task message delivery mode: transient | persistent
  PEER_SLOW_QUEUE   1: `sleep` jobs go to the queue `slow` (see ROUTES)
"""

import hashlib
import os
import sqlite3
import threading
import time

from celery import Celery, signals
from celery.app import backends

BROKER_URL = os.environ.get("PEER_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
DB_PATH = os.environ.get("PEER_DB_PATH", "tornado-celery-demo.sqlite3")
TASK_QUEUE = "celery"  # Celery's default queue
# peer.sh --slow-concurrency N sets PEER_SLOW_QUEUE=1: `sleep` jobs then go to
# their own queue, served by a worker of their own (`celery worker -Q slow`),
# so fast jobs never wait behind slow ones (the seed article's "spread tasks
# over several queues"; Monsoon's `monsoon-worker --tasks`).
SLOW_QUEUE = "slow"
ROUTES = {"sleep": SLOW_QUEUE} if os.environ.get("PEER_SLOW_QUEUE") == "1" else {}
QUEUES = sorted({TASK_QUEUE, *ROUTES.values()})


def queue_for(task_name):
    """The queue that a task's jobs are published to."""
    return ROUTES.get(task_name, TASK_QUEUE)



class PeerCelery(Celery):
    """Celery, with the result backend's class looked up once per process.

    `app.backend` is thread-local, and Celery 5.2 finds the backend class by
    scanning every installed package's entry points (importlib.metadata)
    each time it builds one: every new thread of a `threads` pool pays that
    scan on its first job, under GIL contention. With 1000 threads and 1000
    `sleep 2000` jobs the first wave took ~8 s instead of 2 s. Upstream
    fixed it later the same way (celery/celery#10516, for #9527): the class
    cannot change during a process's life, so it is cached. Nothing else
    differs: same class, same URL, one backend instance per thread."""

    _backend_class_and_url = None

    def _get_backend(self):
        if self._backend_class_and_url is None:
            self._backend_class_and_url = backends.by_url(
                self.backend_cls or self.conf.result_backend, self.loader)
        backend_class, url = self._backend_class_and_url
        return backend_class(app=self, url=url)


app = PeerCelery("tasks", broker=BROKER_URL)
app.conf.update(
    # Results travel back as AMQP messages to the caller's reply queue (the
    # `reply_to` property): Celery 5's replacement for the old amqp:// backend.
    result_backend="rpc://",
    result_persistent=False,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=TASK_QUEUE,
    task_routes={name: {"queue": queue} for name, queue in ROUTES.items()},
    # Jobs live in memory, as in Monsoon (its broker does not persist jobs).
    task_default_delivery_mode=os.environ.get("PEER_DELIVERY", "transient"),
    task_acks_late=False,
    # 0 = no prefetch limit. With a limit, a `threads` pool stalls: it acks
    # only between two reads of the socket, so once the window is full of
    # unacked jobs nothing arrives to wake it (up to 2 s; see README.md).
    worker_prefetch_multiplier=int(os.environ.get("PEER_PREFETCH", "0")),
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    broker_connection_retry_on_startup=True,
    broker_heartbeat=0,  # loopback; AMQP heartbeats only cost wake-ups
    task_track_started=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
    enable_utc=True,
)


class BadRequest(Exception):
    """Invalid args: the web app maps this exception type to HTTP 400."""


def _integer_arg(args, key, lo, hi, default=None):
    if not isinstance(args, dict):
        raise BadRequest("args must be a map")
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"'{key}' must be an integer from {lo} to {hi}")
    return value


# ---- echo, sleep ------------------------------------------------------------


@app.task(name="echo")
def echo(args=None):
    return args


@app.task(name="sleep")
def sleep(args=None):
    ms = _integer_arg(args, "ms", 0, 3_600_000)
    time.sleep(ms / 1000.0)
    return {"slept_ms": ms}


# ---- hash ---------------------------------------------------------------------

_DEFAULT_HASH_DATA = bytes(range(64))


@app.task(name="hash")
def hash_(args=None):
    rounds = _integer_arg(args, "rounds", 1, 10_000_000)
    data = args.get("data")
    if data is None:
        data = _DEFAULT_HASH_DATA
    elif isinstance(data, str):
        data = data.encode("utf-8")
    else:
        raise BadRequest("'data' must be a string")
    sha256 = hashlib.sha256
    digest = sha256(data).digest()
    for _ in range(rounds - 1):
        digest = sha256(digest).digest()
    return digest.hex()


# ---- db.query -----------------------------------------------------------------

DEMO_ROWS = 1000
MAX_QUERY_ROWS = 1000
_SELECT = (
    "SELECT id, name, flag, created_at FROM items WHERE flag = ? "
    "ORDER BY id LIMIT ?"
)
_prepare_lock = threading.Lock()
_prepared = False
_local = threading.local()  # one read-only connection per thread


def prepare_demo_database(path=DB_PATH):
    """Create the demo table with 1000 deterministic rows if it is absent.

    The same rows as Monsoon's worker: id n, name item-%04d, flag (n-1)%10,
    created_at 2024-01-01T00:00:00Z + n hours. Safe to call concurrently
    (BEGIN IMMEDIATE serialises first starts)."""
    db = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "CREATE TABLE IF NOT EXISTS items ("
            " id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " flag INTEGER NOT NULL, created_at TEXT NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS items_flag ON items (flag)")
        (has_rows,) = db.execute("SELECT EXISTS (SELECT 1 FROM items)").fetchone()
        if not has_rows:
            db.execute(
                "WITH RECURSIVE seq (n) AS"
                " (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?)"
                " INSERT INTO items (id, name, flag, created_at)"
                " SELECT n, printf('item-%04d', n), (n - 1) % 10,"
                "  strftime('%Y-%m-%dT%H:%M:%SZ', 1704067200 + n * 3600,"
                "           'unixepoch')"
                " FROM seq",
                (DEMO_ROWS,),
            )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()


def _connection():
    global _prepared
    db = getattr(_local, "db", None)
    if db is None:
        with _prepare_lock:
            if not _prepared:
                prepare_demo_database(DB_PATH)
                _prepared = True
        db = sqlite3.connect(f"file:{DB_PATH}?mode=ro", uri=True, timeout=10)
        _local.db = db
    return db


@app.task(name="db.query")
def db_query(args=None):
    flag = _integer_arg(args, "flag", -(2**63), 2**63 - 1)
    limit = _integer_arg(args, "limit", 1, MAX_QUERY_ROWS, MAX_QUERY_ROWS)
    rows = _connection().execute(_SELECT, (flag, limit)).fetchall()
    return [
        {"id": row[0], "name": row[1], "flag": row[2], "created_at": row[3]}
        for row in rows
    ]


@signals.worker_init.connect
def _create_database_at_start(**_):
    # In the worker's main process, before the pool starts: the database
    # exists before the first job, whatever the pool type.
    global _prepared
    with _prepare_lock:
        prepare_demo_database(DB_PATH)
        _prepared = True
