"""The peer's web front end: a Tornado 6 app that hands every job to Celery.

Routes (the same as Monsoon's front end):
  GET  /now            answered at once by the app itself
  POST /jobs/{task}    the JSON body is the task's args; 200 with its result
  GET  /query/{flag}   the db.query task with {"flag": flag}
  GET  /healthz        200 while the AMQP link is up (with the pending count)

How a job travels (the seed article's design, with today's Celery):
  the handler publishes a task message in Celery's message protocol v2 to
  RabbitMQ's `celery` queue, with `reply_to` = this process's private,
  exclusive reply queue and `correlation_id` = the task id; a stock
  `celery worker` (result_backend = rpc://) runs the task and publishes the
  result to that reply queue; ONE consumer of the reply queue, whose socket
  is registered on Tornado's IOLoop, resolves the future of that task id.
  Nothing blocks the IOLoop: the AMQP socket is non-blocking, reads are
  parsed into frames here and handed to py-amqp's frame handler, writes that
  do not fit in the socket buffer wait for the IOLoop to report it writable.

Errors are JSON, {"error": {"code": ..., "message": ...}}, with Monsoon's
statuses: 400 bad_request, 404 unknown route or task, 405, 413, 500
task_failed, 503 overloaded / broker unreachable, 504 deadline_exceeded.
"""

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import socket
import struct
import sys
import time
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone

import amqp
import tornado.httpserver
import tornado.ioloop
import tornado.web
from amqp.method_framing import frame_handler

import tasks

log = logging.getLogger("peer.app")

DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 3_600_000
MAX_PENDING = 100_000
MAX_BODY_BYTES = 1 << 20
TASK_NAME = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
FLAG = re.compile(r"-?[0-9]{1,19}\Z")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# The tasks the workers serve (Monsoon answers 404 unknown_task otherwise;
# a Celery worker would drop the message and the client would wait).
KNOWN_TASKS = frozenset(n for n in tasks.app.tasks if not n.startswith("celery."))
ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
# Celery's message protocol v2 body: [args, kwargs, embed]; the job's JSON
# args are spliced in as the one positional argument.
BODY_HEAD = b"[["
BODY_TAIL = b'],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]'


class JobError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class CeleryLink:
    """One AMQP connection, owned by the IOLoop thread: publishes tasks and
    consumes their results from a private reply queue."""

    def __init__(self, broker_url, delivery_mode):
        self.broker_url = broker_url
        self.delivery_mode = delivery_mode
        self.reply_queue = f"tornado-celery.reply.{uuid.uuid4().hex}"
        self.pending = {}  # task id -> (future, deadline timer)
        self.conn = None
        self.channel = None
        self.sock = None
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.flush_scheduled = False
        self.want_write = False
        self.on_frame = None
        self.loop = None
        self.up = False
        self.counters = {"sent": 0, "results": 0, "late_results": 0, "timeouts": 0}

    # ---- connection ---------------------------------------------------------

    def connect_blocking(self):
        """Opens the connection and declares the queues (blocking; called at
        start and, for reconnects, on an executor thread)."""
        url = urllib.parse.urlsplit(self.broker_url)
        vhost = urllib.parse.unquote(url.path[1:]) or "/"
        conn = amqp.Connection(f"{url.hostname}:{url.port or 5672}",
                               userid=url.username or "guest",
                               password=url.password or "guest",
                               virtual_host=vhost, heartbeat=0, connect_timeout=5)
        conn.connect()
        channel = conn.channel()
        # The same declarations as the workers' (durable, not auto-deleted),
        # so that jobs sent before a worker starts wait in their queue.
        for queue in tasks.QUEUES:
            channel.queue_declare(queue, durable=True, auto_delete=False)
        channel.queue_declare(self.reply_queue, durable=False, exclusive=True,
                              auto_delete=True)
        channel.basic_consume(self.reply_queue, no_ack=True,
                              callback=self._on_reply)
        return conn, channel

    def attach(self, conn, channel):
        """Moves a connected link onto the IOLoop (IOLoop thread only)."""
        self.loop = tornado.ioloop.IOLoop.current()
        self.conn, self.channel = conn, channel
        # basic_publish would otherwise poll the socket itself for
        # connection.blocked notices; our reader delivers them instead.
        conn.client_properties.setdefault("capabilities", {})["connection.blocked"] = False
        self.sock = conn.transport.sock
        self.sock.setblocking(False)
        conn.transport._write = self._write  # py-amqp's frame writer calls this
        self.on_frame = frame_handler(conn, conn.on_inbound_method)
        self.inbuf.clear()
        self.outbuf.clear()
        self.want_write = False
        self.loop.add_handler(self.sock.fileno(), self._on_events,
                              tornado.ioloop.IOLoop.READ)
        self.up = True

    def _lost(self, why):
        if not self.up:
            return
        self.up = False
        log.error("AMQP link lost: %s", why)
        try:
            self.loop.remove_handler(self.sock.fileno())
        except (OSError, ValueError, KeyError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        pending, self.pending = self.pending, {}
        for future, timer in pending.values():
            self.loop.remove_timeout(timer)
            if not future.done():
                future.set_exception(JobError(503, "overloaded", f"broker link lost: {why}"))
        self.loop.spawn_callback(self._reconnect)

    async def _reconnect(self):
        delay = 0.1
        while not self.up:
            try:
                conn, channel = await self.loop.run_in_executor(None, self.connect_blocking)
            except Exception as exc:  # noqa: BLE001 - any failure means retry
                log.warning("AMQP reconnect failed: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.attach(conn, channel)
            log.warning("AMQP link up again")

    # ---- socket I/O on the IOLoop ------------------------------------------

    def _write(self, data):
        # Frames queue up during one IOLoop iteration and leave in one send
        # (a send costs a loopback wake-up: batching them saves CPU).
        if not self.up:
            raise JobError(503, "overloaded", "broker unreachable")
        if not self.outbuf and not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.add_callback(self._flush)
        self.outbuf += data

    def _flush(self):
        self.flush_scheduled = False
        if not self.up or not self.outbuf:
            return
        try:
            sent = self.sock.send(self.outbuf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._lost(exc)
            return
        del self.outbuf[:sent]
        # The rest waits until the socket is writable again.
        want_write = bool(self.outbuf)
        if want_write != self.want_write:
            self.want_write = want_write
            self.loop.update_handler(
                self.sock.fileno(),
                tornado.ioloop.IOLoop.READ | (tornado.ioloop.IOLoop.WRITE if want_write else 0))

    def _on_events(self, fd, events):
        if events & tornado.ioloop.IOLoop.WRITE:
            self._flush()
        if events & (tornado.ioloop.IOLoop.READ | tornado.ioloop.IOLoop.ERROR):
            self._read()

    def _read(self):
        buf = self.inbuf
        while True:
            try:
                chunk = self.sock.recv(262144)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._lost(exc)
                return
            if not chunk:
                self._lost("RabbitMQ closed the connection")
                return
            buf += chunk
            if len(chunk) < 262144:
                break
        # Hand every complete frame to py-amqp (which calls _on_reply).
        pos, end, unpack_from, on_frame = 0, len(buf), struct.unpack_from, self.on_frame
        try:
            while end - pos >= 8:
                frame_type, channel, size = unpack_from(">BHI", buf, pos)
                stop = pos + 7 + size
                if stop >= end:
                    break
                if buf[stop] != 0xCE:
                    raise ValueError("bad AMQP frame end")
                on_frame((frame_type, channel, bytes(buf[pos + 7:stop])))
                pos = stop + 1
        except Exception as exc:  # noqa: BLE001 - a broken link, not a crash
            del buf[:pos]
            self._lost(exc)
            return
        del buf[:pos]

    # ---- jobs ----------------------------------------------------------------

    def submit(self, task, args_json, timeout_ms):
        """Publishes one task; returns a future of its result message."""
        if not self.up:
            raise JobError(503, "overloaded", "broker unreachable")
        if len(self.pending) >= MAX_PENDING:
            raise JobError(503, "overloaded", "too many pending jobs")
        task_id = str(uuid.uuid4())
        expires = (datetime.now(timezone.utc) + timedelta(milliseconds=timeout_ms)).isoformat()
        headers = {
            "lang": "py", "task": task, "id": task_id, "shadow": None,
            "eta": None, "expires": expires, "group": None, "group_index": None,
            "retries": 0, "timelimit": [None, None], "root_id": task_id,
            "parent_id": None, "argsrepr": args_json[:256].decode("utf-8", "replace"),
            "kwargsrepr": "{}", "origin": ORIGIN, "ignore_result": False,
        }
        message = amqp.Message(
            BODY_HEAD + args_json + BODY_TAIL,
            content_type="application/json", content_encoding="utf-8",
            application_headers=headers, correlation_id=task_id,
            reply_to=self.reply_queue, delivery_mode=self.delivery_mode, priority=0,
        )
        future = self.loop.asyncio_loop.create_future()
        self.channel.basic_publish(message, exchange="", routing_key=tasks.queue_for(task))
        timer = self.loop.call_later(timeout_ms / 1000.0, self._expire, task_id)
        self.pending[task_id] = (future, timer)
        self.counters["sent"] += 1
        return future

    def _expire(self, task_id):
        entry = self.pending.pop(task_id, None)
        if entry and not entry[0].done():
            self.counters["timeouts"] += 1
            entry[0].set_exception(JobError(504, "deadline_exceeded", "the job's deadline passed"))

    def _on_reply(self, message):
        task_id = message.properties.get("correlation_id")
        try:
            reply = json.loads(message.body)
        except ValueError:
            log.error("undecodable result for %s", task_id)
            return
        if reply.get("status") not in ("SUCCESS", "FAILURE", "REVOKED"):
            return  # a state update (STARTED, RETRY): wait for the outcome
        entry = self.pending.pop(task_id, None)
        if entry is None:
            self.counters["late_results"] += 1
            return
        future, timer = entry
        self.loop.remove_timeout(timer)
        self.counters["results"] += 1
        if not future.done():
            future.set_result(reply)


def result_or_raise(reply):
    status = reply["status"]
    if status == "SUCCESS":
        return reply["result"]
    if status == "REVOKED":
        raise JobError(504, "deadline_exceeded", "the job expired before a worker ran it")
    exc = reply.get("result") or {}
    exc_type = exc.get("exc_type", "Exception")
    message = exc.get("exc_message")
    if isinstance(message, (list, tuple)):
        message = " ".join(str(m) for m in message)
    if exc_type == "BadRequest":
        raise JobError(400, "bad_request", str(message))
    if exc_type in ("TimeLimitExceeded", "SoftTimeLimitExceeded"):
        raise JobError(504, "deadline_exceeded", str(message))
    raise JobError(500, "task_failed", f"{exc_type}: {message}")


def error_body(code, message):
    return json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":"))


class BaseHandler(tornado.web.RequestHandler):
    def set_default_headers(self):
        self.set_header("Content-Type", "application/json")

    def write_error(self, status_code, **kwargs):
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                413: "too_large"}.get(status_code, "internal")
        self.finish(error_body(code, self._reason))

    def send_error_json(self, status, code, message):
        self.set_status(status)
        self.finish(error_body(code, message))

    async def run_job(self, task, args_json):
        link = self.application.link
        timeout_ms = DEFAULT_TIMEOUT_MS
        raw = self.get_query_argument("timeout_ms", None) or self.request.headers.get("X-Timeout-Ms")
        if raw is not None:
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_TIMEOUT_MS:
                return self.send_error_json(400, "bad_request",
                                            f"timeout_ms must be an integer from 1 to {MAX_TIMEOUT_MS}")
            timeout_ms = int(raw)
        try:
            reply = await link.submit(task, args_json, timeout_ms)
            result = result_or_raise(reply)
        except JobError as exc:
            return self.send_error_json(exc.status, exc.code, exc.message)
        self.finish(json.dumps(result, separators=(",", ":")))


class NowHandler(BaseHandler):
    def get(self):
        now = time.time()
        ms = int(now * 1000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
        self.finish(f'{{"now_unix_ms":{ms},"now":"{stamp}.{ms % 1000:03d}Z"}}')


class JobHandler(BaseHandler):
    async def post(self, task):
        if not TASK_NAME.match(task):
            return self.send_error_json(
                400, "bad_request",
                "invalid task name: use 1 to 128 letters, digits, '.', '_', '-' or ':'")
        if task not in KNOWN_TASKS:
            return self.send_error_json(404, "unknown_task", f"no worker knows the task '{task}'")
        content_type = self.request.headers.get("Content-Type", "")
        if "msgpack" in content_type:
            return self.send_error_json(415, "unsupported_media_type",
                                        "this peer takes JSON bodies only")
        body = self.request.body.strip()
        if not body:
            body = b"null"
        else:
            try:
                json.loads(body)
            except ValueError as exc:
                return self.send_error_json(400, "bad_request", f"malformed JSON: {exc}")
        await self.run_job(task, body)


class QueryHandler(BaseHandler):
    async def get(self, flag):
        if not FLAG.match(flag) or not INT64_MIN <= int(flag) <= INT64_MAX:
            return self.send_error_json(400, "bad_request", "the flag must be a 64-bit signed integer")
        await self.run_job("db.query", b'{"flag":%d}' % int(flag))


class HealthHandler(BaseHandler):
    def get(self):
        link = self.application.link
        if not link.up:
            self.set_status(503)
        self.finish(json.dumps({"status": "ok" if link.up else "broker_unreachable",
                                "pending": len(link.pending), **link.counters}))


class NotFoundHandler(BaseHandler):
    def prepare(self):
        self.send_error_json(404, "not_found", "unknown route")


def make_app(link):
    app = tornado.web.Application(
        [
            (r"/now", NowHandler),
            (r"/jobs/([^/]+)", JobHandler),
            (r"/query/([^/]+)", QueryHandler),
            (r"/healthz", HealthHandler),
        ],
        default_handler_class=NotFoundHandler,
        log_function=lambda handler: None,  # no access log
        compress_response=False,
    )
    app.link = link
    return app


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--uvloop", action="store_true",
                        help="run Tornado on uvloop (python3-uvloop) instead of asyncio's loop")
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if options.uvloop:
        import uvloop
        uvloop.install()

    delivery = os.environ.get("PEER_DELIVERY", "transient")
    link = CeleryLink(tasks.BROKER_URL, 2 if delivery == "persistent" else 1)

    async def run():
        conn, channel = link.connect_blocking()  # before serving: may block
        link.attach(conn, channel)
        server = tornado.httpserver.HTTPServer(make_app(link), max_body_size=MAX_BODY_BYTES,
                                               idle_connection_timeout=3600)
        server.listen(options.port, address=options.address, backlog=4096)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.stop()

    asyncio.run(run())


if __name__ == "__main__":
    main()
