#!/usr/bin/env python3
"""The client side of tests/test_serve.sh (Python 3 standard library only).

  serve_client.py plain PORT            endpoints, completions, sessions, bad requests
  serve_client.py e2e PORT STATE_DIR    sessions of a TTT-E2E model, state files
  serve_client.py load PORT PID         concurrent clients; every request answered; RSS flat
  serve_client.py shutdown PORT PID     SIGTERM while a stream is in flight: it still completes

Prints "ok: ..." / "FAILED: ..." lines; exits 1 if anything failed. Loopback
only; every loop is bounded and every socket has a timeout.
"""
import http.client
import json
import os
import socket
import sys
import threading
import time

HOST = "127.0.0.1"
TIMEOUT = 120  # seconds for one request (the sanitizer build is slow)
failed = 0


def check(cond, what):
    global failed
    print(("ok: " if cond else "FAILED: ") + what, flush=True)
    if not cond:
        failed = 1
    return cond


def request(port, method, path, body=None, headers=None):
    """(status, headers dict with lower-case names, body bytes); body: dict (sent as JSON), str or bytes."""
    conn = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def call(port, method, path, body=None):
    """(status, parsed JSON or None)."""
    status, _, data = request(port, method, path, body)
    try:
        return status, json.loads(data)
    except ValueError:
        return status, None


def complete(port, **kw):
    return call(port, "POST", "/v1/completions", kw)


def text_of(obj):
    return obj["choices"][0]["text"]


def stream(port, **kw):
    """Events of a streamed completion: (status, content type, list of parsed chunks, saw [DONE])."""
    kw["stream"] = True
    status, hdr, data = request(port, "POST", "/v1/completions", kw)
    chunks, done = [], False
    for event in data.decode().split("\n\n"):
        if not event.strip():
            continue
        assert event.startswith("data: "), event
        payload = event[len("data: "):]
        if payload == "[DONE]":
            done = True
        else:
            chunks.append(json.loads(payload))
    return status, hdr.get("content-type", ""), chunks, done


def expect_error(port, method, path, body, want_status, want_text, what):
    """A bad request: its 4xx, a JSON error naming the problem."""
    status, hdr, data = request(port, method, path, body)
    try:
        err = json.loads(data)["error"]
        msg, typ = err["message"], err["type"]
    except (ValueError, KeyError, TypeError):
        msg, typ = None, None
    good = status == want_status and msg is not None and want_text.lower() in msg.lower() and bool(typ)
    check(good, f"{what} -> {status} {msg!r}" + ("" if good else f" (want {want_status} with {want_text!r})"))
    return hdr


def bad_requests(port, with_state_dir):
    C = "/v1/completions"
    expect_error(port, "POST", C, '{"prompt": "the cat", "max_tokens": 4', 400, "malformed JSON", "malformed JSON")
    expect_error(port, "POST", C, '{"prompt": "a"} trailing', 400, "malformed JSON", "text after the JSON value")
    expect_error(port, "POST", C, "", 400, "empty", "an empty body")
    expect_error(port, "POST", C, "[1, 2]", 400, "JSON object", "a body that is not an object")
    expect_error(port, "POST", C, {"max_tokens": 4}, 400, "missing field 'prompt'", "a missing prompt")
    expect_error(port, "POST", C, {"prompt": 5}, 400, "prompt must be a string", "prompt of the wrong type")
    expect_error(port, "POST", C, {"prompt": "a", "max_tokens": "4"}, 400, "max_tokens must be an integer", "max_tokens as a string")
    expect_error(port, "POST", C, {"prompt": "a", "max_tokens": 2.5}, 400, "max_tokens must be an integer", "max_tokens as a fraction")
    expect_error(port, "POST", C, {"prompt": "a", "max_tokens": -1}, 400, "out of range", "negative max_tokens")
    expect_error(port, "POST", C, {"prompt": "a", "temperature": "hot"}, 400, "temperature must be a number", "temperature as a string")
    expect_error(port, "POST", C, {"prompt": "a", "temperature": -0.5}, 400, "out of range", "negative temperature")
    expect_error(port, "POST", C, {"prompt": "a", "top_p": 0}, 400, "top_p", "top_p 0")
    expect_error(port, "POST", C, {"prompt": "a", "top_k": -3}, 400, "top_k", "negative top_k")
    expect_error(port, "POST", C, {"prompt": "a", "seed": -1}, 400, "seed", "negative seed")
    expect_error(port, "POST", C, {"prompt": "a", "stream": "yes"}, 400, "stream must be true or false", "stream as a string")
    expect_error(port, "POST", C, {"prompt": "a", "n": 2}, 400, "n 2", "n = 2")
    expect_error(port, "POST", C, {"prompt": "a", "stop": "\n"}, 400, "unknown field 'stop'", "an unknown field")
    expect_error(port, "POST", C, {"prompt": "a", "session": 7}, 400, "session must be a string", "session of the wrong type")
    expect_error(port, "POST", C, {"prompt": ""}, 400, "prompt is empty", "an empty prompt")
    expect_error(port, "POST", C, {"prompt": "a", "max_tokens": 10 ** 6}, 400, "--max-tokens", "max_tokens over --max-tokens")
    expect_error(port, "POST", C, {"prompt": "the cat " * 200, "max_tokens": 8}, 400, "--max-context",
                 "prompt + max_tokens over --max-context")
    expect_error(port, "POST", C, {"prompt": "a", "session": "sess-nope"}, 404, "no session", "an unknown session")
    expect_error(port, "POST", C, {"prompt": "x" * 9000}, 413, "--max-body", "a body over --max-body (read and dropped)")
    expect_error(port, "GET", "/v1/nothing", None, 404, "no such endpoint", "an unknown route")
    expect_error(port, "GET", "/", None, 404, "no such endpoint", "the root")
    hdr = expect_error(port, "PUT", C, {"prompt": "a"}, 405, "not allowed", "PUT on /v1/completions")
    check(hdr.get("allow") == "POST", f"405 names the allowed method (Allow: {hdr.get('allow')})")
    expect_error(port, "GET", C, None, 405, "not allowed", "GET on /v1/completions")
    expect_error(port, "POST", "/health", {}, 405, "not allowed", "POST on /health")
    expect_error(port, "DELETE", "/v1/sessions", None, 405, "not allowed", "DELETE on /v1/sessions")
    expect_error(port, "DELETE", "/v1/sessions/sess-nope", None, 404, "no session", "deleting an unknown session")
    expect_error(port, "GET", "/v1/sessions/sess-nope", None, 404, "no session", "getting an unknown session")
    expect_error(port, "POST", "/v1/sessions", {"doc": "x"}, 400, "unknown field 'doc'", "a session without document")
    expect_error(port, "POST", "/v1/sessions", {}, 400, "missing field 'document'", "a session with no fields")
    expect_error(port, "POST", "/v1/sessions", {"document": ""}, 400, "document is empty", "an empty document")
    expect_error(port, "POST", "/v1/sessions", {"document": "the cat " * 200}, 400, "--max-context", "a document over --max-context")
    for name in ["../evil", "a/b", ".hidden", "", "x" * 200, "sp ace"]:
        expect_error(port, "POST", "/v1/sessions/load", {"name": name}, 400, "bad name", f"state name {name[:20]!r}")
    expect_error(port, "POST", "/v1/sessions/load", {"name": 3}, 400, "name must be a string", "a state name of the wrong type")
    if not with_state_dir:
        expect_error(port, "POST", "/v1/sessions/load", {"name": "x"}, 400, "--state-dir", "load without --state-dir")
    # a declared body far over the limit is refused before it is sent
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000000\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            got = s.recv(4096)
            if not got:
                break
            data += got
    check(data.startswith(b"HTTP/1.1 413"), f"Content-Length of 1 GB -> {data[:12]!r} at once, without reading the body")
    # a client that goes away in the middle of a stream
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as s:
        body = json.dumps({"prompt": "the cat", "max_tokens": 30, "stream": True}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        s.recv(64)
    status, health = call(port, "GET", "/health")
    check(status == 200 and health["status"] == "ok", "the server is still up after every bad request")


def plain(port):
    status, h = call(port, "GET", "/health")
    check(status == 200 and h["model"]["kind"] == "full-attention" and h["model"]["parameters"] > 0
          and h["limits"]["max_context"] == 256, f"GET /health: {h and h['model']['kind']}, {h and h['model']['parameters']} parameters")
    status, m = call(port, "GET", "/v1/models")
    check(status == 200 and m["object"] == "list" and m["data"][0]["id"] == h["model"]["id"], "GET /v1/models")

    status, a = complete(port, prompt="the cat sat", max_tokens=8, temperature=0)
    ok = status == 200 and a["object"] == "text_completion" and a["id"] and a["model"] == h["model"]["id"]
    ok = ok and a["choices"][0]["index"] == 0 and a["choices"][0]["finish_reason"] in ("length", "stop")
    u = a["usage"]
    ok = ok and u["prompt_tokens"] >= 1 and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    ok = ok and (u["completion_tokens"] == 8 or a["choices"][0]["finish_reason"] == "stop")
    check(ok, f"POST /v1/completions: {text_of(a)!r} ({a['usage']})")
    _, b = complete(port, prompt="the cat sat", max_tokens=8, temperature=0)
    check(text_of(a) == text_of(b), "greedy (temperature 0) twice: the same text")
    _, s1 = complete(port, prompt="the cat", max_tokens=12, temperature=1.0, top_k=50, top_p=0.95, seed=5)
    _, s2 = complete(port, prompt="the cat", max_tokens=12, temperature=1.0, top_k=50, top_p=0.95, seed=5)
    _, s3 = complete(port, prompt="the cat", max_tokens=12, temperature=1.0, top_k=50, top_p=0.95, seed=6)
    check(text_of(s1) == text_of(s2), "sampling with a seed twice: the same text")
    check(text_of(s1) != text_of(s3), "another seed: other text")
    _, z = complete(port, prompt="the cat", max_tokens=0)
    check(z["choices"][0]["text"] == "" and z["usage"]["completion_tokens"] == 0, "max_tokens 0: no text")

    status, ctype, chunks, done = stream(port, prompt="the cat sat", max_tokens=8, temperature=0)
    joined = "".join(c["choices"][0]["text"] for c in chunks)
    check(status == 200 and ctype.startswith("text/event-stream") and done, f"streamed: {len(chunks)} events, then [DONE]")
    check(joined == text_of(a), f"the streamed text is the greedy text ({joined!r})")
    check(chunks[-1]["choices"][0]["finish_reason"] == a["choices"][0]["finish_reason"]
          and chunks[-1]["usage"] == a["usage"] and all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1]),
          "the last event has the finish reason and usage")

    # sessions: read once, asked many times, each time from the state after the document
    doc = "the cat sat on a mat while dogs ran past seven tall trees near old houses"
    status, s = call(port, "POST", "/v1/sessions", {"document": doc})
    check(status == 200 and s["session"].startswith("sess-") and s["tokens"] > 5, f"POST /v1/sessions: {s}")
    sid = s["session"]
    _, q1 = complete(port, prompt=" the", session=sid, max_tokens=8, temperature=0)
    _, q2 = complete(port, prompt=" the", session=sid, max_tokens=8, temperature=0)
    check(text_of(q1) == text_of(q2) and q1["usage"]["prompt_tokens"] >= 1, f"a session asked twice: the same answer {text_of(q1)!r}")
    _, ref = complete(port, prompt=doc + " the", max_tokens=8, temperature=0)
    check(text_of(ref) == text_of(q1), "and the answer of the document + prompt read in one request")
    _, e1 = complete(port, session=sid, max_tokens=6, temperature=0)
    _, e2 = complete(port, prompt=doc, max_tokens=6, temperature=0)
    check(text_of(e1) == text_of(e2), "a session without a prompt continues the document")
    _, _, sc, _ = stream(port, prompt=" the", session=sid, max_tokens=8, temperature=0)
    check("".join(c["choices"][0]["text"] for c in sc) == text_of(q1), "a streamed session answer: the same")
    expect_error(port, "POST", "/v1/completions", {"prompt": "the cat " * 118, "session": sid, "max_tokens": 8}, 400,
                 "session's", "a session's document + prompt + max_tokens over --max-context")
    status, lst = call(port, "GET", "/v1/sessions")
    check(status == 200 and [x["session"] for x in lst["data"]] == [sid], "GET /v1/sessions lists it")
    status, one = call(port, "GET", f"/v1/sessions/{sid}")
    check(status == 200 and one["tokens"] == s["tokens"], "GET /v1/sessions/{id}")
    expect_error(port, "POST", f"/v1/sessions/{sid}/save", {"name": "x"}, 400, "--state-dir",
                 "saving without --state-dir")
    extra = [call(port, "POST", "/v1/sessions", {"document": "dogs ran"})[1]["session"] for _ in range(2)]
    expect_error(port, "POST", "/v1/sessions", {"document": "one more"}, 429, "--max-sessions", "a session over --max-sessions")
    for x in extra:
        call(port, "DELETE", f"/v1/sessions/{x}")
    status, d = call(port, "DELETE", f"/v1/sessions/{sid}")
    check(status == 200 and d["deleted"] is True, "DELETE /v1/sessions/{id}")
    expect_error(port, "DELETE", f"/v1/sessions/{sid}", None, 404, "no session", "deleting it again")
    expect_error(port, "POST", "/v1/completions", {"prompt": "a", "session": sid}, 404, "no session", "asking a deleted session")
    bad_requests(port, with_state_dir=False)


def e2e(port, state_dir):
    status, h = call(port, "GET", "/health")
    check(status == 200 and h["model"]["kind"] == "ttt-e2e" and h["model"]["inner_chunk"] == 8
          and h["limits"]["state_files"] is True, f"GET /health: {h and h['model']}")
    doc = " ".join(["the cat sat on a mat while dogs ran past seven tall trees near old houses"] * 4)
    status, s = call(port, "POST", "/v1/sessions", {"document": doc})
    check(status == 200 and s["tokens"] > 40 and s["inner_steps"] == (s["tokens"] - 1) // 8,
          f"the session read the document and learned from it: {s}")
    sid = s["session"]
    _, q1 = complete(port, prompt=" the", session=sid, max_tokens=10, temperature=0)
    _, q2 = complete(port, prompt=" the", session=sid, max_tokens=10, temperature=0)
    check(text_of(q1) == text_of(q2), f"asked twice: the same answer {text_of(q1)!r}")
    _, ref = complete(port, prompt=doc + " the", max_tokens=10, temperature=0)
    check(text_of(ref) == text_of(q1), "and the answer of the document + prompt read in one request")
    _, t1 = complete(port, prompt=" the", session=sid, max_tokens=10, temperature=0.9, seed=11)
    _, _, sc, done = stream(port, prompt=" the", session=sid, max_tokens=10, temperature=0.9, seed=11)
    check(done and "".join(c["choices"][0]["text"] for c in sc) == text_of(t1), "streamed and sampled with a seed: the same")

    status, sv = call(port, "POST", f"/v1/sessions/{sid}/save", {"name": "doc-1.v2"})
    path = os.path.join(state_dir, "doc-1.v2.state")
    check(status == 200 and os.path.isfile(path) and sv["bytes"] == os.path.getsize(path), f"save: {sv}")
    status, ld = call(port, "POST", "/v1/sessions/load", {"name": "doc-1.v2"})
    check(status == 200 and ld["session"] != sid and ld["tokens"] == s["tokens"], f"load: {ld}")
    _, l1 = complete(port, prompt=" the", session=ld["session"], max_tokens=10, temperature=0)
    check(text_of(l1) == text_of(q1), "the loaded session answers as the saved one did")
    _, l2 = complete(port, prompt=" the", session=ld["session"], max_tokens=10, temperature=0.9, seed=11)
    check(text_of(l2) == text_of(t1), "sampled with a seed, too")
    expect_error(port, "POST", "/v1/completions", {"prompt": "", "session": ld["session"]}, 400, "state file",
                 "a loaded session without a prompt (a state file keeps no logits)")
    expect_error(port, "POST", "/v1/sessions/load", {"name": "missing"}, 404, "no state file", "loading a missing state")
    with open(path, "rb") as f:
        data = f.read()
    with open(os.path.join(state_dir, "cut.state"), "wb") as f:
        f.write(data[: len(data) // 2])
    expect_error(port, "POST", "/v1/sessions/load", {"name": "cut"}, 400, "refused", "loading a truncated state file")
    with open(os.path.join(state_dir, "junk.state"), "wb") as f:
        f.write(b"not a state file at all")
    expect_error(port, "POST", "/v1/sessions/load", {"name": "junk"}, 400, "refused", "loading a file that is not a state")
    expect_error(port, "POST", f"/v1/sessions/{sid}/save", {"name": "../../escape"}, 400, "bad name",
                 "a save name with a path")
    check(not os.path.exists(os.path.join(state_dir, "..", "..", "escape.state")), "nothing written outside --state-dir")
    status, lst = call(port, "GET", "/v1/sessions")
    check(len(lst["data"]) == 2, "two sessions listed")
    for x in (sid, ld["session"]):
        check(call(port, "DELETE", f"/v1/sessions/{x}")[0] == 200, f"delete {x}")
    status, lst = call(port, "GET", "/v1/sessions")
    check(lst["data"] == [], "none left")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def load(port, pid, threads=8, per_thread=5, rounds=4, margin=0.10, budget_s=240):
    """Rounds of `threads` concurrent clients x `per_thread` requests each (plain,
    streamed and session completions mixed). Round 0 warms up; RSS after the last
    round must stay within `margin` of RSS after round 1."""
    _, s = call(port, "POST", "/v1/sessions", {"document": "the cat sat on a mat while dogs ran past"})
    sid = s["session"]
    deadline = time.monotonic() + budget_s
    rss, lost, times = [], 0, []

    def client(t, results):
        for i in range(per_thread):
            if time.monotonic() > deadline:
                results.append("timeout")
                continue
            kind = (t + i) % 3
            try:
                if kind == 2:
                    status, _, chunks, done = stream(port, prompt="the dog", max_tokens=4, temperature=0.8, seed=t * 100 + i)
                    results.append("ok" if status == 200 and done and chunks else f"stream {status}")
                else:
                    body = {"prompt": "the cat", "max_tokens": 4, "temperature": 0.8, "seed": t * 100 + i}
                    if kind == 1:
                        body.update(prompt=" the", session=sid)
                    status, obj = call(port, "POST", "/v1/completions", body)
                    results.append("ok" if status == 200 and obj["usage"]["completion_tokens"] >= 1 else f"status {status}")
            except Exception as e:  # a lost request: refused, reset, timed out
                results.append(f"{type(e).__name__}: {e}")

    for r in range(rounds):
        results = []
        t0 = time.monotonic()
        ts = [threading.Thread(target=client, args=(t, results)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(TIMEOUT * per_thread + 10)
        dt = time.monotonic() - t0
        bad = [x for x in results if x != "ok"]
        lost += threads * per_thread - (len(results) - len(bad))
        rss.append(rss_kb(pid))
        times.append(dt)
        print(f"round {r}{' (warm-up)' if r == 0 else ''}: {len(results) - len(bad)}/{threads * per_thread} answered in "
              f"{dt:.2f} s ({threads * per_thread / dt:.1f} requests/s), server RSS {rss[-1] / 1024:.1f} MiB"
              + (f"; problems: {sorted(set(bad))[:3]}" if bad else ""), flush=True)
    check(lost == 0, f"load: {threads} clients x {per_thread} requests x {rounds} rounds, {lost} lost")
    growth = (rss[-1] - rss[1]) / rss[1]
    check(rss[-1] <= rss[1] * (1 + margin),
          f"load: RSS after round 1 {rss[1] / 1024:.1f} MiB, after round {rounds - 1} {rss[-1] / 1024:.1f} MiB "
          f"({100 * growth:+.1f}%, allowed +{100 * margin:.0f}%)")
    call(port, "DELETE", f"/v1/sessions/{sid}")
    status, h = call(port, "GET", "/health")
    check(status == 200 and h["queued"] == 0, "the server is up and idle after the load")


def shutdown(port, pid):
    """Sends SIGTERM to the server once the first event of a long stream has
    arrived (so the stream is surely in flight), then reads the stream to its end."""
    import signal
    conn = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    body = json.dumps({"prompt": "the cat", "max_tokens": 200, "temperature": 0.8, "seed": 1, "stream": True})
    conn.request("POST", "/v1/completions", body=body)
    r = conn.getresponse()
    first = r.readline()
    os.kill(pid, signal.SIGTERM)
    rest = (first + r.read()).decode()
    conn.close()
    events = [e for e in rest.split("\n\n") if e.startswith("data: ")]
    last = json.loads(events[-2][6:]) if len(events) >= 2 else {}
    n = last.get("usage", {}).get("completion_tokens", 0)
    check(r.status == 200 and events[-1] == "data: [DONE]" and (n == 200 or last["choices"][0]["finish_reason"] == "stop"),
          f"SIGTERM during a stream: the stream still ends normally ({len(events)} events, {n} tokens, [DONE])")
    # the shell reads this: a stream that ended early (the model wrote <|endoftext|>) may be over before SIGTERM lands
    print(f"stream tokens: {n}", flush=True)
    # the signal lands asynchronously: within a few seconds new connections must be refused
    refused = False
    for _ in range(50):
        try:
            request(port, "GET", "/health")
            time.sleep(0.1)
        except OSError:
            refused = True
            break
    check(refused, "after SIGTERM new connections are refused")


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "plain" and len(sys.argv) == 3:
        plain(int(sys.argv[2]))
    elif mode == "e2e" and len(sys.argv) == 4:
        e2e(int(sys.argv[2]), sys.argv[3])
    elif mode == "load" and len(sys.argv) == 4:
        load(int(sys.argv[2]), int(sys.argv[3]))
    elif mode == "shutdown" and len(sys.argv) == 4:
        shutdown(int(sys.argv[2]), int(sys.argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return failed


if __name__ == "__main__":
    sys.exit(main())
