"""End-to-end tests of the control plane (issue 4): real redis-server, real workers, controller.

Jobs are added with raw XADD (docs/protocol.md, "Jobs"); results are read from the result
hashes and the done stream. Reference texts come from specd-generate, run separately.
Run: /usr/bin/python3 -m pytest tests/e2e -q
"""

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import MODEL, binary, free_port, need_model, wait_for

PREFIX = "specd:"
JOBS = PREFIX + "jobs"
DONE = PREFIX + "done"
DEAD = PREFIX + "jobs:dead"
MAX_TOKENS = 16
SPEC_DEPTH = 4  # the workers' safe default and the controller's static depth

WORDS = ["cat", "dog", "girl", "boy", "tree", "ball", "sun", "park", "fish", "bird", "house",
         "car", "cake", "moon", "star", "box", "hat", "bear", "frog", "duck"]


def make_prompt(i):
    a, b = WORDS[i % len(WORDS)], WORDS[(i * 7 + 3) % len(WORDS)]
    forms = ["Once upon a time there was a {a} and a {b}.",
             "The {a} saw a big {b}",
             "One day, a little {a} found a {b}. The {a}",
             "Lily liked the {a}. She said",
             "Tom and his {a} went to the {b}"]
    return forms[i % len(forms)].format(a=a, b=b) + f" #{i}" * (i % 3 == 0)


def make_jobs(n, tag):
    """n jobs with distinct prompts and seeds; even ones greedy, odd ones sampled."""
    jobs = []
    for i in range(n):
        j = {"id": f"{tag}-{i}", "prompt": make_prompt(i), "seed": 1000 + i,
             "max_tokens": MAX_TOKENS}
        if i % 2 == 0:
            j.update(temperature=0, top_p=1)
        else:
            j.update(temperature=[0.7, 0.9, 1.0][i % 3], top_p=[0.9, 1, 0.95][(i // 2) % 3])
        jobs.append(j)
    return jobs


def xadd_job(r, job):
    fields = {"v": "1"}
    fields.update({k: str(v) for k, v in job.items()})
    r.xadd(JOBS, fields)


def generate_refs(jobs, tmp_path):
    """Texts of specd-generate for each job: {id: text}."""
    gen = binary("specd-generate")
    base = [gen, "-m", MODEL, "--json", "-n", str(MAX_TOKENS), "--ngram", "--depth",
            str(SPEC_DEPTH), "-t", "1"]
    refs = {}
    greedy = [j for j in jobs if float(j["temperature"]) == 0]
    path = tmp_path / "greedy.txt"
    # One prompt per line; our prompts have no newline, tab or backslash to escape.
    path.write_text("".join(j["prompt"] + "\n" for j in greedy))
    out = subprocess.run(base + ["-f", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == len(greedy)
    for row in rows:
        assert row["prompt"] == greedy[row["index"]]["prompt"]
        refs[greedy[row["index"]]["id"]] = row["text"]
    for j in jobs:  # sampled: settings are per run, so one run each (a few ms)
        if float(j["temperature"]) == 0:
            continue
        out = subprocess.run(base + ["-p", j["prompt"], "--temp", str(j["temperature"]),
                                     "--top-p", str(j["top_p"]), "--seed", str(j["seed"])],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        refs[j["id"]] = json.loads(out.stdout.splitlines()[0])["text"]
    return refs


def start_worker(procs, redis, wid, metrics_ep="", settings_ep="", claim_idle_ms=60000,
                 extra=()):
    argv = [binary("specd-worker"), "-m", need_model(), "--proposer", "ngram",
            "--worker-id", wid, "--threads", "1", "--kv-mib", "16", "--max-inflight", "8",
            "--spec-depth", str(SPEC_DEPTH), "--redis-port", str(redis.port),
            "--redis-backoff-max-ms", "400", "--idle-block-ms", "100",
            "--claim-idle-ms", str(claim_idle_ms), "--metrics-endpoint", metrics_ep,
            "--settings-endpoint", settings_ep, "--drain-timeout-ms", "2000"] + list(extra)
    return procs.start("worker-" + wid, argv)


class Controller:
    def __init__(self, procs, redis, tmp_path, ttl_ms=10000, interval_ms=300,
                 static_depth=SPEC_DEPTH):
        self.binary = binary("specd-controller")
        self.procs, self.redis = procs, redis
        self.metrics_ep = f"tcp://127.0.0.1:{free_port()}"
        self.settings_ep = f"tcp://127.0.0.1:{free_port()}"
        self.config = tmp_path / "controller.yaml"
        self.config.write_text(
            "policy:\n  mode: static\n"
            f"  static_depth: {static_depth}\n  interval_ms: {interval_ms}\n"
            f"  settings_ttl_ms: {ttl_ms}\n")
        self.proc = None

    def start(self, extra=()):
        self.http_port = free_port()
        argv = [self.binary, "--config", str(self.config), "--metrics-endpoint", self.metrics_ep,
                "--settings-endpoint", self.settings_ep, "--http-address", "127.0.0.1",
                "--http-port", str(self.http_port), "--redis-port", str(self.redis.port),
                "--republish-ms", "200"] + list(extra)
        self.proc = self.procs.start("controller", argv)
        time.sleep(0.3)
        assert self.proc.alive(), "specd-controller exited at start:\n" + self.proc.text()
        return self


def wait_results(r, ids, timeout, procs_to_watch=()):
    """Waits until every id has a result hash with a status; returns {id: hash}."""
    pending = set(ids)
    results = {}
    deadline = time.monotonic() + timeout
    while pending:
        pipe = r.pipeline()
        order = sorted(pending)
        for i in order:
            pipe.hgetall(PREFIX + "result:" + i)
        for i, h in zip(order, pipe.execute()):
            if h and b"status" in h:
                results[i] = {k.decode(): v.decode("utf-8", "replace") for k, v in h.items()}
                pending.discard(i)
        if not pending:
            break
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.text()[-3000:]}" for p in procs_to_watch)
            pytest.fail(f"{len(pending)} of {len(ids)} jobs without result after {timeout} s, "
                        f"e.g. {sorted(pending)[:5]}\n{logs}")
        time.sleep(0.1)
    return results


def done_counts(r):
    counts = {}
    for _, f in r.xrange(DONE, "-", "+"):
        i = f[b"id"].decode()
        counts[i] = counts.get(i, 0) + 1
    return counts


def check_exactly_once(r, jobs, results):
    counts = done_counts(r)
    for j in jobs:
        res = results[j["id"]]
        assert res["status"] == "done", (j["id"], res)
        assert counts.get(j["id"]) == 1, f"{j['id']} announced {counts.get(j['id'])} times"
    assert r.xlen(DEAD) == 0, r.xrange(DEAD, "-", "+", count=5)


def test_200_jobs_match_specd_generate(procs, redis_server, tmp_path):
    need_model()
    jobs = make_jobs(200, "e2e")
    refs = generate_refs(jobs, tmp_path)
    if os.environ.get("SPECD_E2E_NO_CONTROLLER") == "1":  # debugging aid: workers alone
        ctl = None
        workers = [start_worker(procs, redis_server, f"w{k}") for k in (1, 2)]
    else:
        ctl = Controller(procs, redis_server, tmp_path).start()
        workers = [start_worker(procs, redis_server, f"w{k}", ctl.metrics_ep, ctl.settings_ep)
                   for k in (1, 2)]
    r = redis_server.client()
    for j in jobs:
        xadd_job(r, j)
    results = wait_results(r, [j["id"] for j in jobs], 120,
                           workers + ([ctl.proc] if ctl else []))
    check_exactly_once(r, jobs, results)
    by_worker = {}
    mismatches = []
    for j in jobs:
        res = results[j["id"]]
        by_worker[res["worker"]] = by_worker.get(res["worker"], 0) + 1
        assert int(res["completion_tokens"]) <= MAX_TOKENS
        if res["text"] != refs[j["id"]]:
            mismatches.append((j, res["text"], refs[j["id"]]))
    assert not mismatches, f"{len(mismatches)} results differ from specd-generate, first: " \
                           f"{mismatches[0]}"
    assert len(by_worker) == 2, f"one worker did all the work: {by_worker}"
    for w in workers:
        assert w.alive(), w.text()[-2000:]
    if ctl:
        assert ctl.proc.alive(), ctl.proc.text()[-2000:]
        # The workers followed the controller (static depth = their default, so texts agree).
        # The jobs can all finish before the controller's first tick: its settings (and
        # periodic re-sends, republish_ms) reach the idle workers shortly after.
        wait_for(lambda: any(applied_epochs(w.text()) for w in workers), 20,
                 what="a worker applying the controller's settings")


def consumer_pending(r, consumer):
    for c in r.xinfo_consumers(JOBS, "specd-workers"):
        if c["name"].decode() == consumer:
            return c["pending"]
    return 0


def test_kill9_worker_midway_no_loss_no_duplicate(procs, redis_server, tmp_path):
    need_model()
    jobs = make_jobs(200, "k9")
    for j in jobs:
        j["max_tokens"] = 48
    kw = dict(claim_idle_ms=1500)
    w1 = start_worker(procs, redis_server, "w1", **kw)
    r = redis_server.client()
    for j in jobs:
        xadd_job(r, j)
    # Freeze w1 at a moment when it has finished some jobs and holds others, then kill it.
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "w1 never caught holding jobs"
        if r.xlen(DONE) >= 5:
            w1.p.send_signal(signal.SIGSTOP)
            held = consumer_pending(r, "w1")
            if held > 0 and r.xlen(DONE) < len(jobs):
                break
            w1.p.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    held_entries = {e["message_id"] for e in
                    r.xpending_range(JOBS, "specd-workers", "-", "+", 1000, "w1")}
    held_ids = {f[b"id"].decode() for eid, f in r.xrange(JOBS, "-", "+") if eid in held_entries}
    w1.kill9()
    w2 = start_worker(procs, redis_server, "w2", **kw)
    results = wait_results(r, [j["id"] for j in jobs], 120, [w2])
    check_exactly_once(r, jobs, results)
    assert w2.alive()
    assert held_ids, "no job ids found for w1's pending entries"
    for i in held_ids:  # the killed worker's jobs were reclaimed, run once, by w2
        assert results[i]["worker"] == "w2", (i, results[i])


def test_redis_restart_under_load(procs, redis_server_aof, tmp_path):
    need_model()
    rs = redis_server_aof
    jobs = make_jobs(300, "rr")
    for j in jobs:
        j["max_tokens"] = 48
    w1 = start_worker(procs, rs, "w1")
    w2 = start_worker(procs, rs, "w2")
    r = rs.client()
    for j in jobs:
        xadd_job(r, j)
    wait_for(lambda: r.xlen(DONE) >= 20, 60, what="20 finished jobs")
    assert r.xlen(DONE) < len(jobs), "all jobs finished before the restart: not under load"
    rs.kill9()
    time.sleep(1.0)  # workers see the connection fail and back off
    rs.start()
    r = rs.client()
    results = wait_results(r, [j["id"] for j in jobs], 120, [w1, w2])
    check_exactly_once(r, jobs, results)
    assert w1.alive() and w2.alive()
    for w in (w1, w2):  # the workers did see Redis go away and come back
        log = w.text()
        assert "redis_down" in log and "redis_up" in log, log[-2000:]
    # After the restart, new jobs are still served.
    more = make_jobs(10, "rr2")
    for j in more:
        xadd_job(r, j)
    wait_results(r, [j["id"] for j in more], 60, [w1, w2])


class Feeder(threading.Thread):
    """Keeps a trickle of jobs flowing so that workers publish metrics."""

    def __init__(self, client, tag):
        super().__init__(daemon=True)
        self.r, self.tag, self.n = client, tag, 0
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            try:
                xadd_job(self.r, {"id": f"{self.tag}-{self.n}", "prompt": make_prompt(self.n),
                                  "max_tokens": MAX_TOKENS, "temperature": 0})
                self.n += 1
            except Exception:  # noqa: BLE001 - keep feeding
                pass
            self.stop_ev.wait(0.1)


def applied_epochs(text):
    return [int(m) for m in re.findall(r"settings_applied epoch=(\d+)", text)]


def test_controller_kill_fallback_then_follow_restart(procs, redis_server, tmp_path):
    need_model()
    # The controller pins depth 2; the worker's safe default is SPEC_DEPTH (4), so each state
    # is visible in the settings the worker logs.
    ctl = Controller(procs, redis_server, tmp_path, ttl_ms=1500, static_depth=2).start()
    w = start_worker(procs, redis_server, "w1", ctl.metrics_ep, ctl.settings_ep)
    feeder = Feeder(redis_server.client(), "fb")
    feeder.start()
    try:
        wait_for(lambda: applied_epochs(w.text()), 30, what="worker applying controller settings")
        first = max(applied_epochs(w.text()))
        assert re.search(rf"settings_applied epoch={first} enabled=1 depth=2 ", w.text())
        ctl.proc.kill9()
        wait_for(lambda: "settings_fallback" in w.text(), 15,
                 what="worker falling back to its safe default after the settings TTL")
        fb_at = w.text().rindex("settings_fallback")
        assert f"(enabled=1 depth={SPEC_DEPTH})" in w.text()[fb_at:].splitlines()[0]
        ctl.start()  # same endpoints, new process: new epoch base
        wait_for(lambda: "after_fallback=1" in w.text()[fb_at:], 30,
                 what="worker applying the restarted controller's settings")
        after = applied_epochs(w.text()[fb_at:])
        assert after and max(after) > first, (first, after)
        assert re.search(rf"settings_applied epoch={max(after)} enabled=1 depth=2 ",
                         w.text()[fb_at:])
        assert w.alive()
        assert w.stop() == 0
        m = re.search(r"worker_exit .*settings_applied=(\d+) .*fallbacks=(\d+)", w.text())
        assert m and int(m.group(1)) >= 2 and int(m.group(2)) >= 1, w.text()[-1000:]
    finally:
        feeder.stop_ev.set()
        feeder.join(5)
    r = redis_server.client()
    assert r.xlen(DEAD) == 0


MALFORMED = [
    ({"v": "1", "id": "bad-noprompt"}, "prompt"),
    ({"v": "1", "id": "bad-topp", "prompt": "Hi", "top_p": "1.5"}, "top_p"),
    ({"v": "1", "id": "bad-maxtok", "prompt": "Hi", "max_tokens": "abc"}, "max_tokens"),
    ({"v": "1", "id": "bad-temp", "prompt": "Hi", "temperature": "nan"}, "temperature"),
    ({"v": "1", "id": "bad-seed", "prompt": "Hi", "seed": "-5"}, "seed"),
    ({"v": "2", "id": "bad-version", "prompt": "Hi"}, "v"),
    ({"v": "1", "prompt": "no id here"}, "id"),
]


def test_malformed_jobs_dead_lettered_good_jobs_served(procs, redis_server, tmp_path):
    need_model()
    w = start_worker(procs, redis_server, "w1")
    r = redis_server.client()
    good = make_jobs(20, "good")
    # A field given twice (a dict cannot say that).
    r.execute_command("XADD", JOBS, "*", "v", "1", "id", "bad-dup", "prompt", "Hi", "seed", "1",
                      "seed", "2")
    for k, j in enumerate(good):
        xadd_job(r, j)
        if k < len(MALFORMED):
            r.xadd(JOBS, MALFORMED[k][0])
    results = wait_results(r, [j["id"] for j in good], 60, [w])
    assert all(results[j["id"]]["status"] == "done" for j in good)
    wait_for(lambda: r.xlen(DEAD) >= len(MALFORMED) + 1, 20, what="all malformed jobs dead-lettered")
    dead = {}
    for _, f in r.xrange(DEAD, "-", "+"):
        f = {k.decode(): v.decode("utf-8", "replace") for k, v in f.items()}
        assert f.get("reason"), f
        json.loads(f["fields"])  # the original fields, as JSON
        dead[f["id"]] = f
    assert len(dead) == len(MALFORMED) + 1, dead
    for fields, word in MALFORMED + [({"id": "bad-dup"}, "duplicate field 'seed'")]:
        d = dead[fields.get("id", "")]
        assert word in d["reason"], (word, d["reason"])
        if "id" in fields:  # a waiting producer learns why
            res = r.hgetall(PREFIX + "result:" + fields["id"])
            assert res.get(b"status") == b"error", res
            assert res.get(b"error"), res
    assert w.alive()
    # Still serving afterwards.
    more = make_jobs(5, "after")
    for j in more:
        xadd_job(r, j)
    wait_results(r, [j["id"] for j in more], 30, [w])
    assert r.xlen(JOBS) == 0
    assert w.stop() == 0, w.text()[-2000:]
    m = re.search(r"worker_exit .*jobs_done=(\d+) jobs_dead=(\d+)", w.text())
    assert m, w.text()[-2000:]
    assert int(m.group(1)) == len(good) + len(more)


def test_malformed_jobs_counted_by_worker(procs, redis_server, tmp_path):
    need_model()
    w = start_worker(procs, redis_server, "w1")
    r = redis_server.client()
    for fields, _ in MALFORMED[:3]:
        r.xadd(JOBS, fields)
    good = make_jobs(2, "cnt")
    for j in good:
        xadd_job(r, j)
    wait_results(r, [j["id"] for j in good], 30, [w])
    wait_for(lambda: r.xlen(DEAD) >= 3, 20, what="3 dead letters")
    assert w.stop() == 0, w.text()[-2000:]
    exit_line = [ln for ln in w.text().splitlines() if "worker_exit" in ln][-1]
    malformed = re.search(r"jobs_malformed=(\d+)", exit_line)
    assert malformed and int(malformed.group(1)) == 3, exit_line


def http(port, method, path, body=None, token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=body.encode() if body is not None else None)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def policy_rejections(prom):
    """Sum of specd_controller_policy_updates_total samples other than result accepted."""
    name = "specd_controller_policy_updates_total{"
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in prom.splitlines()
               if ln.startswith(name) and "accepted" not in ln)


def test_bad_policy_json_rejected_controller_keeps_serving(procs, redis_server, tmp_path):
    need_model()
    ctl = Controller(procs, redis_server, tmp_path, static_depth=2).start(["--token", "s3cret"])
    w = start_worker(procs, redis_server, "w1", ctl.metrics_ep, ctl.settings_ep)
    port = ctl.http_port
    wait_for(lambda: http(port, "GET", "/v1/policy")[0] == 200, 10, what="controller HTTP")
    _, prom0 = http(port, "GET", "/metrics")
    bad = ["{not json", "[]", '{"max_depth": 99}', '{"mode": "sideways"}',
           '{"min_depth": 5, "max_depth": 3}', '{"interval_ms": "fast"}']
    for body in bad:
        code, text = http(port, "PUT", "/v1/policy", body, token="s3cret")
        assert code == 400, (body, code, text)
        assert text.strip(), f"no error message for {body!r}"
    code, _ = http(port, "PUT", "/v1/policy", '{"static_depth": 3}')  # no token
    assert code == 401
    code, text = http(port, "GET", "/v1/policy")
    assert code == 200 and '"static"' in text and '"static_depth":2' in text.replace(" ", ""), \
        text
    _, prom1 = http(port, "GET", "/metrics")
    assert "specd_controller_policy_updates_total{" in prom1, prom1[:2000]
    assert policy_rejections(prom1) - policy_rejections(prom0) >= len(bad)
    assert ctl.proc.alive(), ctl.proc.text()[-2000:]
    # Settings still flow and jobs are still served.
    r = redis_server.client()
    jobs = make_jobs(10, "pol")
    for j in jobs:
        xadd_job(r, j)
    wait_results(r, [j["id"] for j in jobs], 30, [w, ctl.proc])
    wait_for(lambda: re.search(r"settings_applied epoch=\d+ enabled=1 depth=2 ", w.text()), 10,
             what="worker applying the controller's settings")
    assert ctl.proc.stop() == 0, ctl.proc.text()[-2000:]
