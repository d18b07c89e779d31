"""Fixtures for the end-to-end tests: a private redis-server, free ports, child processes.

Every process started here is killed at the end of its test, whatever happens.
Binaries come from $SPECD_BIN (default build/bin), the model from ../shared/models.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.abspath(os.path.join(REPO, os.environ.get("SPECD_BIN", "build/bin")))
MODEL = os.path.abspath(os.path.join(REPO, "..", "shared", "models", "stories260K.gguf"))
REDIS_SERVER = shutil.which("redis-server")

try:
    import redis as redis_py
except ImportError:  # pragma: no cover
    redis_py = None


def binary(name):
    """Path of a specd program, or skip the test with a clear message."""
    path = os.path.join(BIN, name)
    if not os.access(path, os.X_OK):
        pytest.skip(f"{name} not built: {path} missing (set SPECD_BIN or run make)")
    return path


def need_model():
    if not os.path.exists(MODEL):
        pytest.skip(f"model missing: {MODEL}")
    return MODEL


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, interval=0.05, what="condition"):
    """Polls pred() until it returns a truthy value; returns it, or fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Proc:
    """A child process whose stdout+stderr go to a log file."""

    def __init__(self, name, argv, log_path, env=None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    def alive(self):
        return self.p.poll() is None

    def kill9(self):
        if self.alive():
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(timeout=10)

    def stop(self, timeout=5):
        """SIGTERM, then SIGKILL after timeout. Returns the exit status."""
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.send_signal(signal.SIGKILL)
                self.p.wait(timeout=10)
        if not self.log.closed:
            self.log.close()
        return self.p.returncode

    def text(self):
        # The child writes to the file itself; nothing of ours is buffered.
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


class Procs:
    def __init__(self, tmp):
        self.tmp = tmp
        self.all = []

    def start(self, name, argv, env=None):
        p = Proc(name, argv, os.path.join(self.tmp, f"{name}-{len(self.all)}.log"), env)
        self.all.append(p)
        return p

    def cleanup(self):
        for p in self.all:
            try:
                p.stop(timeout=3)
            except Exception:  # noqa: BLE001 - cleanup must reach every process
                pass


@pytest.fixture
def procs(tmp_path):
    ps = Procs(str(tmp_path))
    yield ps
    ps.cleanup()


class RedisServer:
    """A private redis-server on a free 127.0.0.1 port with its own directory."""

    def __init__(self, procs, workdir, appendonly=False):
        self.procs = procs
        self.dir = workdir
        self.port = free_port()
        self.appendonly = appendonly
        self.proc = None
        self.start()

    def start(self):
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always", "--protected-mode", "no", "--daemonize", "no"]
        self.proc = self.procs.start("redis", argv)
        wait_for(self._ping, 10, what=f"redis-server on port {self.port}")

    def _ping(self):
        try:
            return self.client().ping()
        except Exception:  # noqa: BLE001
            return False

    def kill9(self):
        self.proc.kill9()

    def client(self):
        return redis_py.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


@pytest.fixture
def redis_server(procs, tmp_path):
    if REDIS_SERVER is None:
        pytest.skip("redis-server not installed")
    if redis_py is None:
        pytest.skip("python3-redis not installed")
    d = tmp_path / "redis"
    d.mkdir()
    return RedisServer(procs, str(d))


@pytest.fixture
def redis_server_aof(procs, tmp_path):
    if REDIS_SERVER is None:
        pytest.skip("redis-server not installed")
    if redis_py is None:
        pytest.skip("python3-redis not installed")
    d = tmp_path / "redis"
    d.mkdir()
    return RedisServer(procs, str(d), appendonly=True)
