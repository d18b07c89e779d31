"""specd_client against a real redis-server, with the worker side played by hand (conftest.py).
Expected values are written out from docs/protocol.md, not computed by the client."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest

from specd_client import (Client, ConnectionFailed, InvalidJob, JobFailed, Result, ResultTimeout,
                          StreamRestarted, new_job_id)

ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def entries(raw, prefix):
    """Fields of every job entry, via plain XRANGE, as lists of (name, value) in order."""
    return [list(f.items()) for _id, f in raw.xrange(prefix + "jobs")]


def test_submit_writes_every_field_exactly(client, raw, prefix):
    job_id = client.submit("def fib(n):\n", id="job-1.a:b", max_tokens=48, temperature=0.7,
                           top_p=0.9, top_k=40, seed=2**64 - 1, stop=["\n\n", 'say "é"'],
                           stream=True, job_class="code", priority="high")
    assert job_id == "job-1.a:b"
    assert entries(raw, prefix) == [[
        (b"v", b"1"), (b"id", b"job-1.a:b"), (b"prompt", b"def fib(n):\n"),
        (b"max_tokens", b"48"), (b"temperature", b"0.7"), (b"top_p", b"0.9"),
        (b"top_k", b"40"), (b"seed", b"18446744073709551615"),
        (b"stop", '["\\n\\n","say \\"é\\""]'.encode()), (b"stream", b"1"),
        (b"class", b"code"), (b"priority", b"high")]]
    stop = dict(entries(raw, prefix)[0])[b"stop"]
    assert json.loads(stop) == ["\n\n", 'say "é"']


def test_submit_minimal_job_and_generated_ids(client, raw, prefix):
    ids = [client.submit("hi") for _ in range(50)]
    assert len(set(ids)) == 50
    now_ms = time.time_ns() // 1_000_000
    for job_id in ids:
        assert ID_RE.match(job_id)
        ms, rnd = job_id.split("-")
        assert abs(int(ms) - now_ms) < 60_000 and len(rnd) == 16
    # Options not given are not written: the worker applies its own defaults.
    assert entries(raw, prefix)[0] == [(b"v", b"1"), (b"id", ids[0].encode()),
                                       (b"prompt", b"hi")]
    # bytes prompts are sent as they are; one stop string is a list of one.
    client.submit(b"\x00\xff raw", stop="END", temperature=0, top_p=1)
    assert entries(raw, prefix)[50][2:] == [(b"prompt", b"\x00\xff raw"), (b"temperature", b"0.0"),
                                            (b"top_p", b"1.0"), (b"stop", b'["END"]')]
    assert ID_RE.match(new_job_id())


@pytest.mark.parametrize("opts, why", [
    ({"prompt": ""}, "field 'prompt'"),
    ({"prompt": 5}, "field 'prompt': expected str or bytes"),
    ({"id": "has space"}, "field 'id'"),
    ({"id": "x" * 129}, "field 'id'"),
    ({"max_tokens": 0}, "field 'max_tokens': 0 is outside 1..4096"),
    ({"max_tokens": 4097}, "field 'max_tokens'"),
    ({"max_tokens": 2.0}, "field 'max_tokens': expected an integer"),
    ({"max_tokens": True}, "field 'max_tokens': expected an integer"),
    ({"temperature": -0.1}, "field 'temperature'"),
    ({"temperature": 10.5}, "field 'temperature'"),
    ({"temperature": float("nan")}, "field 'temperature'"),
    ({"top_p": 0}, "field 'top_p': 0 is outside (0, 1]"),
    ({"top_p": 1.5}, "field 'top_p'"),
    ({"top_k": -1}, "field 'top_k'"),
    ({"seed": 2**64}, "field 'seed'"),
    ({"seed": -1}, "field 'seed'"),
    ({"stop": [""]}, "field 'stop'"),
    ({"stop": ["a"] * 17}, "field 'stop': 17 strings"),
    ({"stop": ["x" * 257]}, "field 'stop'"),
    ({"stop": ["a\0b"]}, "field 'stop'"),
    ({"stop": [3]}, "field 'stop': expected strings"),
    ({"stream": 1}, "field 'stream': expected a bool"),
    ({"job_class": "a b"}, "field 'class'"),
    ({"job_class": "c" * 65}, "field 'class'"),
    ({"priority": "urgent"}, "field 'priority'"),
])
def test_submit_refuses_invalid_jobs(client, raw, prefix, opts, why):
    opts = dict(opts)
    prompt = opts.pop("prompt", "p")
    with pytest.raises(InvalidJob, match=re.escape(why)):
        client.submit(prompt, **opts)
    assert raw.exists(prefix + "jobs") == 0  # nothing was added
    with pytest.raises(TypeError):
        client.submit("p", temprature=1)


def test_result_waits_for_the_worker(client, worker):
    worker.serve(delay=0.3)
    job_id = client.submit("ping", max_tokens=5)
    t0 = time.monotonic()
    r = client.result(job_id, timeout=5)
    waited = time.monotonic() - t0
    assert 0.25 <= waited < 3  # it blocked until the result was written
    assert r == Result(job_id=job_id, status="done", text="echo:ping", finish_reason="stop",
                       prompt_tokens=11, completion_tokens=22, drafted_tokens=40,
                       accepted_tokens=30, queue_ms=1.5, ttft_ms=12.25, total_ms=99.125,
                       worker="hand-1", error="")
    assert r.ok and r.acceptance_rate == 0.75
    assert worker.jobs[0][b"max_tokens"] == b"5"
    # Once there, the result is returned at once.
    assert client.get_result(job_id) == r
    t0 = time.monotonic()
    assert client.result(job_id, timeout=0) == r
    assert time.monotonic() - t0 < 0.5


def test_result_sees_an_announcement_among_many(client, worker, raw, prefix):
    # Other jobs' announcements must not confuse the waiter, nor make it miss its own.
    def noise():
        for i in range(30):
            raw.xadd(prefix + "done", {"id": f"other-{i}"})
            time.sleep(0.005)

    t = threading.Thread(target=noise)
    t.start()
    worker.serve(delay=0.1)
    job_id = client.submit("x")
    assert client.result(job_id, timeout=5).text == "echo:x"
    t.join()


def test_result_timeout(client):
    t0 = time.monotonic()
    with pytest.raises(ResultTimeout, match="no result for job nobody within 0.3 s"):
        client.result("nobody", timeout=0.3)
    assert 0.28 <= time.monotonic() - t0 < 1.5
    assert client.get_result("nobody") is None
    with pytest.raises(InvalidJob):
        client.get_result("bad id")


def test_error_result_and_generate(client, worker):
    worker.serve(n=2, status="error", error="prompt longer than the context")
    job_id = client.submit("long prompt")
    r = client.result(job_id, timeout=5)
    assert r.status == "error" and not r.ok
    assert r.error == "prompt longer than the context"
    with pytest.raises(JobFailed, match="failed: prompt longer than the context") as e:
        client.generate("again", timeout=5)
    assert e.value.result.status == "error"


def test_generate_returns_text(client, worker):
    worker.serve()
    assert client.generate("2+2=", max_tokens=3, temperature=0, timeout=5) == "echo:2+2="
    assert worker.jobs[0][b"temperature"] == b"0.0"


def test_stream_follows_deltas_to_done(client, worker):
    # "ö" (c3 b6) and "€" (e2 82 ac) are split between deltas.
    pieces = (b"Hel", b"lo, w\xc3", b"\xb6rld ", b"\xe2\x82", b"\xac")
    worker.serve(pieces=pieces, gap=0.02)
    job_id = client.submit("greet", stream=True)
    got = list(client.stream(job_id, timeout=5))
    assert "".join(got) == "Hello, wörld €"
    assert len(got) >= 3  # pieces arrive as they are produced
    assert all("\ufffd" not in g for g in got)
    assert client.result(job_id, timeout=1).text == "Hello, wörld €"


def test_stream_after_a_restart_continues_when_the_text_agrees(client, worker, raw, prefix):
    job_id = client.submit("x", stream=True, id="restarted-1")
    worker.delta(job_id, b"abc")
    worker.delta(job_id, b"de")
    worker.reset(job_id)  # another worker restarts the job from its beginning
    worker.delta(job_id, b"ab")
    worker.delta(job_id, b"cdef")
    worker.delta(job_id, b"g")
    raw.xadd(f"{prefix}stream:{job_id}", {"done": "1"})
    assert list(client.stream(job_id, timeout=2)) == ["abc", "de", "f", "g"]

    job_id = client.submit("x", stream=True, id="restarted-2")
    worker.delta(job_id, b"abc")
    worker.reset(job_id)
    worker.delta(job_id, b"aXc")
    raw.xadd(f"{prefix}stream:{job_id}", {"done": "1"})
    it = client.stream(job_id, timeout=2)
    assert next(it) == "abc"
    with pytest.raises(StreamRestarted):
        next(it)


def test_stream_timeout(client):
    t0 = time.monotonic()
    with pytest.raises(ResultTimeout, match="no new text for job silent within 0.25 s"):
        list(client.stream("silent", timeout=0.25))
    assert 0.2 <= time.monotonic() - t0 < 1.5


def test_prefix_keeps_queues_apart(redis_server, raw):
    a = Client(redis_server.url, prefix="qa:")
    b = Client(redis_server.url, prefix="{qb}:", jobs_stream="in")
    a.submit("to a")
    b.submit("to b")
    assert raw.xlen("qa:jobs") == 1 and raw.xlen("{qb}:in") == 1
    assert raw.exists("specd:jobs") == 0


def test_connection_refused_message():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    c = Client(f"redis://127.0.0.1:{port}/0", connect_timeout=0.5)
    want = (f"cannot connect to Redis at 127.0.0.1:{port}: Connection refused \u2014 "
            "is redis-server running?")
    with pytest.raises(ConnectionFailed) as e:
        c.ping()
    assert str(e.value) == want
    with pytest.raises(ConnectionFailed):
        c.submit("x")
    with pytest.raises(ConnectionFailed):
        c.result("x", timeout=0.1)
