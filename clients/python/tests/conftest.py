"""Test support: a private redis-server on a free port (started once per session, killed with
the test process), a fresh key prefix per test, and a hand-played worker that serves jobs with
raw redis commands as docs/protocol.md describes (XREADGROUP, delta XADDs, HSET result, XADD
done, XACK), so the client is checked against the protocol, not against itself."""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install redis)")

GROUP = "specd-workers"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the server gets SIGKILL when the test process dies for any reason.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


class RedisServer:
    def __init__(self, exe: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="specd-pytest-redis-")
        self.proc: Optional[subprocess.Popen] = None
        for _attempt in range(3):  # a port taken between probe and bind: try another
            self.port = _free_port()
            self.proc = subprocess.Popen(
                [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.dir, "--logfile", "server.log"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent)
            if self._wait_ready():
                return
            self.stop(remove=False)
        log = Path(self.dir, "server.log")
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        shutil.rmtree(self.dir, ignore_errors=True)
        raise RuntimeError(f"redis-server would not start: {tail}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _wait_ready(self) -> bool:
        r = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.proc and self.proc.poll() is None:
            try:
                if r.ping():
                    return True
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        return False

    def stop(self, remove: bool = True) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    exe = os.environ.get("SPECD_REDIS_SERVER") or shutil.which("redis-server")
    if not exe:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    srv = RedisServer(exe)
    yield srv
    srv.stop()


_prefixes = itertools.count()


@pytest.fixture
def prefix() -> str:
    return f"t{next(_prefixes)}:"


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator["redis.Redis"]:
    r = redis.Redis(port=redis_server.port)
    yield r
    r.close()


@pytest.fixture
def client(redis_server: RedisServer, prefix: str):
    from specd_client import Client

    c = Client(redis_server.url, prefix=prefix)
    yield c
    c.close()


class HandWorker:
    """Plays a specd worker with raw redis commands, in a thread."""

    def __init__(self, port: int, prefix: str) -> None:
        self.r = redis.Redis(port=port)
        self.prefix = prefix
        self.jobs: List[Dict[bytes, bytes]] = []  # fields of the jobs served
        self._thread: Optional[threading.Thread] = None
        try:
            self.r.xgroup_create(prefix + "jobs", GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError:
            pass  # BUSYGROUP

    def take(self, block_ms: int = 5000) -> Tuple[bytes, Dict[bytes, bytes]]:
        reply = self.r.xreadgroup(GROUP, "hand-1", {self.prefix + "jobs": ">"}, count=1,
                                  block=block_ms)
        assert reply, "no job arrived"
        entry_id, fields = reply[0][1][0]
        self.jobs.append(fields)
        return entry_id, fields

    def delta(self, job_id: str, piece: bytes) -> None:
        self.r.xadd(f"{self.prefix}stream:{job_id}", {"delta": piece})

    def reset(self, job_id: str) -> None:
        self.r.xadd(f"{self.prefix}stream:{job_id}", {"reset": "1"})

    def finish(self, entry_id: bytes, job_id: str, text: bytes, status: str = "done",
               error: str = "", streaming: bool = False) -> None:
        self.r.hset(f"{self.prefix}result:{job_id}", mapping={
            "status": status, "text": text, "finish_reason": "stop", "prompt_tokens": "11",
            "completion_tokens": "22", "drafted_tokens": "40", "accepted_tokens": "30",
            "queue_ms": "1.500", "ttft_ms": "12.250", "total_ms": "99.125", "worker": "hand-1",
            "error": error})
        if streaming:
            self.r.xadd(f"{self.prefix}stream:{job_id}", {"done": "1"})
        self.r.xadd(self.prefix + "done", {"id": job_id})
        self.r.xack(self.prefix + "jobs", GROUP, entry_id)

    def serve(self, n: int = 1, delay: float = 0.0, pieces: Tuple[bytes, ...] = (),
              status: str = "done", error: str = "", gap: float = 0.01) -> None:
        """Serves n jobs in a thread: text is the pieces joined, or b"echo:" + prompt."""

        def run() -> None:
            for _ in range(n):
                entry_id, f = self.take()
                job_id = f[b"id"].decode()
                streaming = f.get(b"stream") == b"1"
                for p in pieces if streaming else ():
                    self.delta(job_id, p)
                    time.sleep(gap)
                time.sleep(delay)
                text = b"".join(pieces) if pieces else b"echo:" + f[b"prompt"]
                self.finish(entry_id, job_id, text, status, error, streaming)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread:
            self._thread.join(10)
            assert not self._thread.is_alive(), "hand worker did not finish"
        self.r.close()


@pytest.fixture
def worker(redis_server: RedisServer, prefix: str) -> Iterator[HandWorker]:
    w = HandWorker(redis_server.port, prefix)
    yield w
    w.join()
