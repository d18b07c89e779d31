"""Python client for specd: submit generation jobs to the Redis job queue, wait for results,
follow streamed text.

The wire contract is ``docs/protocol.md`` ("Redis job queues") in the specd repository; this
module speaks it with plain redis-py commands::

    from specd_client import Client

    c = Client("redis://127.0.0.1:6379/0")
    job_id = c.submit("def fib(n):", max_tokens=48, temperature=0)
    print(c.result(job_id, timeout=60).text)

    job_id = c.submit("Once upon a time", stream=True, seed=7)
    for piece in c.stream(job_id, timeout=30):
        print(piece, end="", flush=True)

    text = c.generate("2 + 2 =", max_tokens=4, temperature=0, timeout=60)
"""

from __future__ import annotations

import codecs
import json
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import redis

__all__ = [
    "Client",
    "Result",
    "SpecdError",
    "ConnectionFailed",
    "InvalidJob",
    "JobFailed",
    "ResultTimeout",
    "StreamRestarted",
    "new_job_id",
    "JOB_VERSION",
]

__version__ = "0.1.0"

JOB_VERSION = 1
"""The ``v`` field this client writes."""

_LABEL_RE = re.compile(rb"^[A-Za-z0-9._:-]+$")
_ID_MAX = 128
_CLASS_MAX = 64
_PROMPT_MAX_BYTES = 1 << 20
_STOP_MAX = 16
_STOP_MAX_BYTES = 256
_TOP_K_MAX = 2**31 - 1
_SEED_MAX = 2**64 - 1


class SpecdError(Exception):
    """Base class of the errors this client raises."""


class ConnectionFailed(SpecdError):
    """Redis could not be reached; the message says where and why."""


class InvalidJob(SpecdError, ValueError):
    """A job argument breaks the job rules of docs/protocol.md; nothing was submitted."""


class ResultTimeout(SpecdError, TimeoutError):
    """No result (or no new text) arrived within the timeout."""


class JobFailed(SpecdError):
    """The worker finished the job with status ``error`` (see ``result.error``)."""

    def __init__(self, result: "Result") -> None:
        super().__init__(f"job {result.job_id} failed: {result.error or '(no reason given)'}")
        self.result = result


class StreamRestarted(SpecdError):
    """The job was restarted by another worker and its new text differs from the text already
    yielded, which therefore cannot be taken back. Wait for the final text with
    :meth:`Client.result` instead."""


@dataclass(frozen=True)
class Result:
    """A job's result, as the worker wrote it to ``<prefix>result:<job-id>``."""

    job_id: str
    status: str  # "done" or "error"
    text: str  # invalid UTF-8 (if any) replaced by U+FFFD
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    drafted_tokens: int
    accepted_tokens: int
    queue_ms: float
    ttft_ms: float
    total_ms: float
    worker: str
    error: str

    @property
    def ok(self) -> bool:
        """True when the job finished normally (status ``done``)."""
        return self.status == "done"

    @property
    def acceptance_rate(self) -> Optional[float]:
        """Accepted / drafted tokens, or None when nothing was drafted."""
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else None

    @classmethod
    def from_hash(cls, job_id: str, h: Mapping[bytes, bytes]) -> "Result":
        """Builds a Result from the raw fields of a result hash (HGETALL)."""

        def s(name: str) -> str:
            return h.get(name.encode(), b"").decode("utf-8", errors="replace")

        def i(name: str) -> int:
            try:
                return int(h.get(name.encode(), b"0"))
            except ValueError:
                return 0

        def f(name: str) -> float:
            try:
                return float(h.get(name.encode(), b"0"))
            except ValueError:
                return 0.0

        return cls(
            job_id=job_id,
            status=s("status"),
            text=s("text"),
            finish_reason=s("finish_reason"),
            prompt_tokens=i("prompt_tokens"),
            completion_tokens=i("completion_tokens"),
            drafted_tokens=i("drafted_tokens"),
            accepted_tokens=i("accepted_tokens"),
            queue_ms=f("queue_ms"),
            ttft_ms=f("ttft_ms"),
            total_ms=f("total_ms"),
            worker=s("worker"),
            error=s("error"),
        )


def new_job_id() -> str:
    """A fresh job id, ``<wall-clock ms>-<16 hex digits>``, the format specd-submit uses."""
    return f"{time.time_ns() // 1_000_000}-{secrets.randbits(64):016x}"


def _as_bytes(value: Union[str, bytes], name: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise InvalidJob(f"field '{name}': expected str or bytes, got {type(value).__name__}")


def _check_label(value: Union[str, bytes], name: str, max_len: int) -> bytes:
    b = _as_bytes(value, name)
    if not 1 <= len(b) <= max_len or not _LABEL_RE.match(b):
        raise InvalidJob(f"field '{name}': {value!r} is not 1..{max_len} bytes of A-Z a-z 0-9 . _ : -")
    return b


def _check_int(value: Any, name: str, lo: int, hi: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJob(f"field '{name}': expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise InvalidJob(f"field '{name}': {value} is outside {lo}..{hi}")
    return str(value)


def _check_number(value: Any, name: str, lo: float, hi: float, lo_open: bool) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidJob(f"field '{name}': expected a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise InvalidJob(f"field '{name}': {value} is outside {interval}")
    return repr(v)  # shortest text that reads back to the same double


def _stop_json(stop: Union[str, Sequence[str]]) -> str:
    items = [stop] if isinstance(stop, str) else list(stop)
    if len(items) > _STOP_MAX:
        raise InvalidJob(f"field 'stop': {len(items)} strings, more than {_STOP_MAX}")
    for s in items:
        if not isinstance(s, str):
            raise InvalidJob(f"field 'stop': expected strings, got {type(s).__name__}")
        n = len(s.encode("utf-8"))
        if n == 0 or n > _STOP_MAX_BYTES or "\0" in s:
            raise InvalidJob(
                f"field 'stop': {s!r} must be 1..{_STOP_MAX_BYTES} bytes without NUL")
    return json.dumps(items, ensure_ascii=False, separators=(",", ":"))


class Client:
    """A producer for the specd job queue.

    ``redis_url`` is a redis-py URL (``redis://host:port/db``); ``prefix`` is the key prefix
    shared with the workers (default ``specd:``). ``max_tokens_limit`` mirrors the workers'
    limit so that a too-large job is refused here instead of dead-lettered there.
    Methods raise :class:`ConnectionFailed` when Redis is unreachable.
    A Client is safe to share between threads (redis-py pools connections).
    """

    def __init__(
        self,
        redis_url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "specd:",
        *,
        jobs_stream: str = "jobs",
        done_stream: str = "done",
        max_tokens_limit: int = 4096,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.prefix = prefix
        self.jobs_key = prefix + jobs_stream
        self.done_key = prefix + done_stream
        self.max_tokens_limit = max_tokens_limit
        self._socket_timeout = socket_timeout
        self._redis = redis.Redis.from_url(
            redis_url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            decode_responses=False,
        )
        kw = self._redis.connection_pool.connection_kwargs
        self.address = f"{kw.get('host', kw.get('path', '?'))}:{kw.get('port', '')}".rstrip(":")

    # ---- plumbing -----------------------------------------------------------------------------

    def _connection_failed(self, e: Exception) -> ConnectionFailed:
        msg = str(e)
        m = re.search(r"connecting to \S+?\.\s+(.*?)\.?$", msg)
        reason = m.group(1) if m else msg
        return ConnectionFailed(
            f"cannot connect to Redis at {self.address}: {reason} \u2014 is redis-server running?")

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._redis, name)(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            raise self._connection_failed(e) from e

    def ping(self) -> None:
        """Checks that Redis answers; raises :class:`ConnectionFailed` otherwise."""
        self._call("ping")

    def close(self) -> None:
        """Closes the connections."""
        self._redis.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- submitting ---------------------------------------------------------------------------

    def job_fields(
        self,
        prompt: Union[str, bytes],
        *,
        id: Optional[str] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        top_k: Optional[int] = None,
        seed: Optional[int] = None,
        stop: Union[None, str, Sequence[str]] = None,
        stream: bool = False,
        job_class: Optional[str] = None,
        priority: Optional[str] = None,
    ) -> "dict[str, Union[str, bytes]]":
        """The stream entry fields of a job, validated, in protocol order. Options left at
        None are not written, so the worker applies its defaults. See :meth:`submit`."""
        fields: "dict[str, Union[str, bytes]]" = {"v": str(JOB_VERSION)}
        fields["id"] = _check_label(id, "id", _ID_MAX).decode() if id is not None else new_job_id()
        p = _as_bytes(prompt, "prompt")
        if not 1 <= len(p) <= _PROMPT_MAX_BYTES:
            raise InvalidJob(f"field 'prompt': {len(p)} bytes, must be 1..{_PROMPT_MAX_BYTES}")
        fields["prompt"] = p
        if max_tokens is not None:
            fields["max_tokens"] = _check_int(max_tokens, "max_tokens", 1, self.max_tokens_limit)
        if temperature is not None:
            fields["temperature"] = _check_number(temperature, "temperature", 0.0, 10.0, False)
        if top_p is not None:
            fields["top_p"] = _check_number(top_p, "top_p", 0.0, 1.0, True)
        if top_k is not None:
            fields["top_k"] = _check_int(top_k, "top_k", 0, _TOP_K_MAX)
        if seed is not None:
            fields["seed"] = _check_int(seed, "seed", 0, _SEED_MAX)
        if stop is not None:
            fields["stop"] = _stop_json(stop)
        if not isinstance(stream, bool):
            raise InvalidJob(f"field 'stream': expected a bool, got {type(stream).__name__}")
        if stream:
            fields["stream"] = "1"
        if job_class is not None:
            fields["class"] = _check_label(job_class, "class", _CLASS_MAX).decode()
        if priority is not None:
            if priority not in ("high", "normal"):
                raise InvalidJob(f"field 'priority': {priority!r} is not 'high' or 'normal'")
            fields["priority"] = priority
        return fields

    def submit(self, prompt: Union[str, bytes], **opts: Any) -> str:
        """Adds a job to the queue and returns its id.

        Options (all optional; absent ones take the worker's defaults): ``id`` (default: a fresh
        id from :func:`new_job_id`), ``max_tokens`` (1..max_tokens_limit), ``temperature``
        ([0, 10], 0 is greedy), ``top_p`` ((0, 1]), ``top_k`` (>= 0, 0 is off), ``seed``
        (0..2^64-1), ``stop`` (a string or up to 16 strings), ``stream`` (True: the worker
        streams text deltas, read them with :meth:`stream`), ``job_class`` (the ``class``
        label), ``priority`` ("high" or "normal").

        Raises :class:`InvalidJob` (nothing submitted), :class:`ConnectionFailed`, or
        TypeError for an unknown option.
        """
        fields = self.job_fields(prompt, **opts)
        self._call("xadd", self.jobs_key, fields, id="*")
        return str(fields["id"])

    # ---- results ------------------------------------------------------------------------------

    def _result_key(self, job_id: str) -> str:
        _check_label(job_id, "id", _ID_MAX)
        return f"{self.prefix}result:{job_id}"

    def get_result(self, job_id: str) -> Optional[Result]:
        """The job's result if it is there now, else None (no waiting)."""
        h = self._call("hgetall", self._result_key(job_id))
        return Result.from_hash(job_id, h) if h and b"status" in h else None

    def _done_tail(self) -> bytes:
        last = self._call("xrevrange", self.done_key, "+", "-", count=1)
        return last[0][0] if last else b"0-0"

    def result(self, job_id: str, timeout: Optional[float] = None) -> Result:
        """Waits for the job's result and returns it, whatever its status (check
        :attr:`Result.ok`). ``timeout`` in seconds; None waits for ever, 0 only looks.

        Race-free: takes the tail of the done stream before looking at the result hash, then
        blocks on the done stream from there (re-checking the hash every second in case the
        done stream was trimmed). Raises :class:`ResultTimeout` or :class:`ConnectionFailed`.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        want = job_id.encode()
        last = self._done_tail()
        look = True
        while True:
            if look:
                r = self.get_result(job_id)
                if r is not None:
                    return r
                next_look = time.monotonic() + 1.0
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise ResultTimeout(f"no result for job {job_id} within {timeout:g} s")
            block_ms = 1000 if left is None else max(1, min(1000, int(left * 1000)))
            reply = self._call("xread", {self.done_key: last}, count=256, block=block_ms)
            look = time.monotonic() >= next_look
            for _key, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    look = look or (fields or {}).get(b"id") == want

    # ---- streaming ----------------------------------------------------------------------------

    def _stream_entries(self, job_id: str, timeout: Optional[float]) -> Iterator["tuple[bytes, bytes]"]:
        """(name, value) of each entry of the job's delta stream until ``done``; ``timeout`` is
        the longest wait for a new entry."""
        key = f"{self.prefix}stream:{job_id}"
        _check_label(job_id, "id", _ID_MAX)
        last: Union[str, bytes] = "0"
        while True:
            deadline = None if timeout is None else time.monotonic() + timeout
            reply = None
            while not reply:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ResultTimeout(f"no new text for job {job_id} within {timeout:g} s")
                block_ms = 1000 if left is None else max(1, min(1000, int(left * 1000)))
                reply = self._call("xread", {key: last}, count=4096, block=block_ms)
            for _key, entries in reply:
                for entry_id, fields in entries:
                    last = entry_id
                    for name, value in (fields or {}).items():
                        yield name, value
                        if name == b"done":
                            return

    def stream(self, job_id: str, timeout: Optional[float] = None) -> Iterator[str]:
        """Yields the text of a streaming job (submitted with ``stream=True``) as it is
        produced, until the job is done. Only verified text is streamed, never draft tokens.
        A UTF-8 character split between deltas is yielded once whole.

        ``timeout`` (seconds, None: no limit) is the longest wait for new text; it raises
        :class:`ResultTimeout`. When another worker restarts the job (its first worker died),
        the text already yielded is compared with the new text and the stream continues after
        it; if they differ, :class:`StreamRestarted` is raised. The final result (status,
        token counts) is then available from :meth:`result`.
        """
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        sent = bytearray()  # bytes yielded so far
        replay: Optional[bytearray] = None  # text received since a reset, while catching up
        for name, value in self._stream_entries(job_id, timeout):
            if name == b"reset":
                replay = bytearray()
                continue
            if name == b"done":
                tail = decoder.decode(b"", final=True)
                if tail:
                    yield tail
                return
            if name != b"delta":
                continue
            if replay is not None:
                replay += value
                n = min(len(replay), len(sent))
                if replay[:n] != sent[:n]:
                    raise StreamRestarted(
                        f"job {job_id} was restarted and its new text differs from the text "
                        "already streamed")
                if len(replay) <= len(sent):
                    continue
                value = bytes(replay[len(sent):])
                replay = None
            sent += value
            text = decoder.decode(value)
            if text:
                yield text

    # ---- convenience --------------------------------------------------------------------------

    def generate(self, prompt: Union[str, bytes], *, timeout: Optional[float] = None,
                 **opts: Any) -> str:
        """Submits a job, waits for it and returns its text. Raises :class:`JobFailed` when the
        worker reports an error, :class:`ResultTimeout` after ``timeout`` seconds. Takes the
        options of :meth:`submit`."""
        job_id = self.submit(prompt, **opts)
        r = self.result(job_id, timeout=timeout)
        if not r.ok:
            raise JobFailed(r)
        return r.text
