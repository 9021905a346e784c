"""Cases PUB-01..PUB-10: request smuggling and desync, through a real fastgw and the recording probe.

Payloads are those of the case corpus (shared/cases/payloads.py), written out
here so that the suite runs from a plain checkout. "REJECT-CLOSE" is checked by
the ``reject_close`` fixture (tests/cases/conftest.py).
"""

import time

import pytest

from fastgw.testing.probe import Client


def _ids(cases):
    return [label for label, _ in cases]


# -- PUB-01 --------------------------------------------------------------------------------

def _cl_te():
    smug = b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
    body_a = b"0\r\n\r\n" + smug
    a = (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n" % len(body_a)) + body_a
    size_line = b"%x\r\n" % len(smug)
    body_b = size_line + smug + b"\r\n0\r\n\r\n"
    b = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
         b"Content-Length: %d\r\n\r\n" % len(size_line)) + body_b
    return [("A CL first, covers smuggled GET", a), ("B TE first, CL covers only size line", b)]


CL_TE = _cl_te()


@pytest.mark.parametrize("payload", [p for _, p in CL_TE], ids=_ids(CL_TE))
def test_pub01_cl_and_te_rejected(reject_close, payload):
    """PUB-01: Content-Length and Transfer-Encoding in the same request (CL.TE / TE.CL).

    Sources: nginx-tests body_chunked.t ("transfer encoding with content-length" -> 400);
    http-garden transducer bug 23 (relayd forwarded both headers); openlitespeed#392 (two CL
    fields reached the backend); llhttp#238. Expected: REJECT-CLOSE 400 (fastgw rejects
    ambiguous framing), `GET /admin` never reaches the upstream.
    """
    reject_close(payload, 400, forbidden=[b"/admin"])


# -- PUB-02 --------------------------------------------------------------------------------

def _dup_cl():
    smug = b"GET /evil HTTP/1.1\r\nHost: a\r\n\r\n"
    a = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(smug) + smug
    b = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nContent-Length: 0\r\n\r\n" % len(smug) + smug
    c = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
    d = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello"
    return [("A 0 then N", a), ("B N then 0", b), ("C identical duplicates", c), ("D list 5, 5", d)]


DUP_CL = _dup_cl()


@pytest.mark.parametrize("payload", [p for _, p in DUP_CL], ids=_ids(DUP_CL))
def test_pub02_duplicate_content_length_rejected(reject_close, payload):
    """PUB-02: duplicate Content-Length fields (conflicting, identical, or a list).

    Sources: http-garden server bugs 23/33 and transducer bug 22 (first/last CL taken, both
    forwarded); llhttp content-length.md ("Error on duplicate Content-Length"); nginx-tests
    proxy_duplicate_headers.t. Expected: A, B REJECT-CLOSE 400 and `/evil` never at the
    upstream; C, D: fastgw's choice is 400 too (as llhttp and nginx), so REJECT-CLOSE 400 -
    the upstream never receives two CL lines or a list value.
    """
    reject_close(payload, 400, forbidden=[b"/evil", b"Content-Length: 5, 5"])


# -- PUB-03 --------------------------------------------------------------------------------

BAD_CL = [("CL=%r" % v, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + v + b"\r\n\r\n0123456789")
          for v in [b"+10", b"1_0", b"0x0a", b"-1", b"1 0", b"10abc", b"", b"99999999999999999999999"]]


@pytest.mark.parametrize("payload", [p for _, p in BAD_CL], ids=_ids(BAD_CL))
def test_pub03_non_canonical_content_length_rejected(reject_close, payload):
    """PUB-03: non-canonical Content-Length values (+10, 1_0, 0x0a, -1, "1 0", 10abc, empty, overflow).

    Sources: http-garden server bugs 10, 29, 32, 16/38, 26 (Python int() leniency, longest
    prefix, octal, empty, negative CL); llhttp content-length.md; Http11Probe
    cl-internal-space.md. Expected: every variant REJECT-CLOSE 400.
    """
    reject_close(payload, 400, forbidden=[b"0123456789"])


# -- PUB-04 --------------------------------------------------------------------------------

def _bad_te(v):
    return b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + v + b"\r\n\r\n1\r\nZ\r\n0\r\n\r\n"


BAD_TE = [("TE=%r" % v, _bad_te(v))
          for v in [b"xchunked", b"identity", b"chunked, identity", b"chunkedchunked", b"gzip"]]


@pytest.mark.parametrize("payload", [p for _, p in BAD_TE], ids=_ids(BAD_TE))
def test_pub04_unsupported_transfer_encoding_rejected(reject_close, payload):
    """PUB-04: unsupported or obfuscated Transfer-Encoding values.

    Sources: nginx-tests body_chunked.t (identity / "chunked, identity" -> 501); llhttp
    transfer-encoding.md ("Ignoring pigeons", chunkedchunked); http-garden server bug 44;
    usestrix/strix#405 (TE obfuscation list). Expected: REJECT-CLOSE with 501 or 400; fastgw's
    choice (design.md §2, RFC 9112 §6.3): 400 whenever `chunked` is absent or not the final
    coding, which is the case for all five values here.
    """
    reject_close(payload, 400, forbidden=[b"Z\r\n"])


def test_pub04_chunked_final_after_unsupported_coding_is_501(reject_close):
    """PUB-04 (fastgw's own rule next to the case): `chunked` final after a coding fastgw does not support.

    RFC 9112 §6.1 / nginx-tests body_chunked.t: a transfer coding the server does not
    understand is 501. llhttp accepts `gzip, chunked`, so this is fastgw's check.
    Expected: REJECT-CLOSE 501.
    """
    reject_close(_bad_te(b"gzip, chunked"), 501, forbidden=[b"Z\r\n"])


def test_pub04_chunked_in_other_case_is_accepted(gw, probe, connect):
    """PUB-04: `Transfer-Encoding: Chunked` (case differs only) is valid.

    Expected: 200; the upstream receives one POST with body `Z`, framed canonically
    (`Transfer-Encoding: chunked` in lower case, or `Content-Length: 1`).
    """
    c = connect(gw.port)
    c.send(_bad_te(b"Chunked"))
    resp = c.read_response()
    assert resp.status == 200 and resp.body == b"ok", resp
    (req,) = probe.wait_requests(1)
    assert req.method == b"POST" and req.body == b"Z", req
    raw = probe.received(req.conn_id)
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")[1:]]
    if b"transfer-encoding" in fields:
        assert b"\r\nTransfer-Encoding: chunked\r\n" in head + b"\r\n", head
        assert fields.count(b"transfer-encoding") == 1 and b"content-length" not in fields, head
        assert body == b"1\r\nZ\r\n0\r\n\r\n", body
    else:
        assert b"\r\nContent-Length: 1\r\n" in head + b"\r\n", head
        assert fields.count(b"content-length") == 1, head
        assert body == b"Z", body
    assert b"Chunked" not in raw
    assert probe.errors == []


# -- PUB-05 --------------------------------------------------------------------------------

def _obs_fold():
    nxt = b"GET /bye HTTP/1.1\r\nHost: a\r\n\r\n"
    a = (b"POST /hello HTTP/1.1\r\nHost: a\r\nFoo: bar\r\n Content-Length: %d\r\n\r\n" % len(nxt)) + nxt
    b = b"PUT /url HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n  abc\r\n\r\n5\r\nWorld\r\n0\r\n\r\n"
    return [("A folded Content-Length", a), ("B fold after TE value", b)]


OBS_FOLD = _obs_fold()


@pytest.mark.parametrize("payload", [p for _, p in OBS_FOLD], ids=_ids(OBS_FOLD))
def test_pub05_obs_fold_rejected(reject_close, payload):
    """PUB-05: obsolete line folding (obs-fold) hiding a framing header.

    Sources: llhttp#350 (CVE-2024-27982, space before Content-Length); llhttp invalid.md
    ("Spaces before headers"), transfer-encoding.md; gunicorn#2176. Expected: fastgw's choice
    REJECT-CLOSE 400 for both; the fold bytes and `/bye` never reach the upstream.
    """
    reject_close(payload, 400, forbidden=[b"/bye", b"/hello", b"/url", b"World"])


# -- PUB-06 --------------------------------------------------------------------------------

BARE_LF = [
    ("A LF hides TE line",
     b"POST / HTTP/1.1\r\nHost: a\r\nx:x\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n\r\n"),
    ("B LF-only request", b"GET / HTTP/1.1\nHost: a\nConnection: close\n\n"),
]


@pytest.mark.parametrize("payload", [p for _, p in BARE_LF], ids=_ids(BARE_LF))
def test_pub06_bare_lf_rejected(reject_close, payload):
    """PUB-06: bare LF as a line terminator inside the header block.

    Sources: llhttp invalid.md ("Headers separated by LF", "Only LFs present"); http-garden
    transducer bugs 16 and 13, server bug 19; llhttp#236. Expected: A REJECT-CLOSE 400;
    B: fastgw's choice is 400 + close (no LF-only tolerance), so REJECT-CLOSE 400 as well.
    """
    reject_close(payload, 400, forbidden=[b"x:x"])


# -- PUB-07 --------------------------------------------------------------------------------

CTL_IN_VALUE = [
    ("A bare CR then TE",
     b"POST / HTTP/1.1\r\nHost: a\r\nX-Abc: \rxTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n\r\n"),
    ("B NUL in Host", b"GET / HTTP/1.1\r\nHost: example.test\x00.attacker.test\r\n\r\n"),
    ("C bare CR mid value", b"GET / HTTP/1.1\r\nHost: a\r\nX-Test: va\rlue\r\n\r\n"),
]


@pytest.mark.parametrize("payload", [p for _, p in CTL_IN_VALUE], ids=_ids(CTL_IN_VALUE))
def test_pub07_cr_or_nul_in_header_value_rejected(reject_close, payload):
    """PUB-07: CR or NUL bytes inside header values.

    Sources: aiohttp advisory for CVE-2023-30589 (google/megalista#148, DorskFR/LeaguePyBot#21);
    http-garden server bugs 13, 2/35, transducer bugs 10 and 12. Expected: REJECT-CLOSE 400 for
    all three; no CR, LF or NUL inside a forwarded header value (nothing is forwarded).
    """
    reject_close(payload, 400, forbidden=[b"attacker", b"\x00", b"X-Abc", b"X-Test"])


# -- PUB-08 --------------------------------------------------------------------------------

BAD_CHUNK_SIZE = [
    ("size=%r" % v,
     b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + v + b"\r\nZ\r\n0\r\n\r\n")
    for v in [b"1these-bytes-never-get-validated", b"0x1", b"+1", b"1 ", b" 1", b"1_"]
] + [("size overflow 17 hex digits",
      b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nZ\r\n0\r\n\r\n")]


@pytest.mark.parametrize("payload", [p for _, p in BAD_CHUNK_SIZE], ids=_ids(BAD_CHUNK_SIZE))
def test_pub08_invalid_chunk_size_rejected(reject_close, payload):
    """PUB-08: invalid chunk-size lines.

    Sources: apache/trafficserver#10580; http-garden transducer bugs 7, 19, 24 and server bugs
    1, 22, 25; llhttp http.ts ("Chunk size overflow"), transfer-encoding.md. Expected:
    REJECT-CLOSE 400 for all (the request is rejected in the read that carries it, even when
    an idle upstream connection is ready: the upstream logs zero bytes); client chunk-size
    lines are never copied through.
    """
    reject_close(payload, 400, forbidden=[b"these-bytes", b"0x1", b"+1", b"1_", b"10000000000000001"])


# -- PUB-09 --------------------------------------------------------------------------------

RUNAWAY = [
    ("A nginx runaway chunk",
     b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"4\r\nSEE-THIS\r\n0\r\n\r\n"),
    ("B two garbage bytes instead of CRLF",
     b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nAAAAAXX0\r\n\r\n"),
]


def _check_runaway_streaming(gw, probe, payload):
    """PUB-09 with request bodies streamed: 400 + close; an upstream connection that got part of
    the request is closed by fastgw without a final chunk and never pooled."""
    mark = probe.mark()
    before = {c.id: len(c.requests) for c in probe.connections}
    with Client(gw.port) as c:
        c.send(payload)
        resp = c.read_response(timeout=5.0)
        assert resp.status == 400, resp
        assert "close" in resp.tokens("connection"), resp
        closed, extra = c.wait_closed(timeout=2.0)
        assert closed and extra == b"", extra
    time.sleep(0.2)
    touched = []
    for conn in probe.connections:
        got = b"".join(d for _, d in conn.chunks[mark[0].get(conn.id, 0):])
        if not got:
            continue
        touched.append(conn.id)
        assert b"0\r\n\r\n" not in got, f"a terminating chunk reached the upstream: {got!r}"
        assert len(conn.requests) == before.get(conn.id, 0), conn.requests
        assert conn.wait_closed(2.0) and conn.peer_closed_at, \
            f"fastgw did not close upstream connection {conn.id} after the broken body"
    assert probe.requests_since(mark) == []
    assert probe.errors == []
    for _ in range(2):
        fresh = Client(gw.port)
        with fresh:
            fresh.send(b"GET /fresh HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            r = fresh.read_response(timeout=5.0)
        assert r.status == 200 and r.body == b"ok", r
    assert all(r.conn_id not in touched for r in probe.requests_since(mark)), \
        "an upstream connection that carried the broken body was reused"
    return touched


@pytest.mark.parametrize("payload", [p for _, p in RUNAWAY], ids=_ids(RUNAWAY))
def test_pub09_runaway_chunk_rejected(gw, probe, warm, payload):
    """PUB-09: chunk data not followed by CRLF ("runaway chunk"), baseline config.

    Sources: nginx-tests body_chunked.t ("runaway chunk" -> 400); h11 CVE-2025-43859
    (swarmauri-sdk#1324), Pound PR 43; http-garden server bug 39. fastgw streams request
    bodies today (proxy_request_buffering is issue 7), so the streaming rules apply: client
    gets 400 and the connection closes; the upstream may have the head and the first body
    bytes, but that upstream connection is closed without a terminating `0\\r\\n\\r\\n` and never
    pooled. Checked with a warm pool (every worker has an idle upstream connection).
    """
    warm()
    _check_runaway_streaming(gw, probe, payload)


@pytest.mark.parametrize("payload", [p for _, p in RUNAWAY], ids=_ids(RUNAWAY))
def test_pub09_runaway_chunk_rejected_with_request_buffering(make_gw, reject_close, payload):
    """PUB-09 with `proxy_request_buffering on`: the upstream receives nothing (REJECT-CLOSE 400)."""
    gw = make_gw(location="proxy_request_buffering on;")
    reject_close(payload, 400, forbidden=[b"SEE-", b"AAAAA"], gateway=gw)


@pytest.mark.parametrize("payload", [p for _, p in RUNAWAY], ids=_ids(RUNAWAY))
def test_pub09_runaway_chunk_rejected_streaming(make_gw, probe, warm, payload):
    """PUB-09 with `proxy_request_buffering off`: the streaming rules (see the baseline test)."""
    gw = make_gw(location="proxy_request_buffering off;")
    warm(gw)
    _check_runaway_streaming(gw, probe, payload)


# -- PUB-10 --------------------------------------------------------------------------------

FRAGMENTED = (b"POST /frag HTTP/1.1\r\nHost: a\r\nX-Long-Header-Name: value-one\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
              b"GET /second?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")


def _send_fragmented(gw, probe, pieces, pause):
    mark = probe.mark()
    with Client(gw.port, nodelay=True) as c:
        c.send_pieces(pieces, pause)
        first = c.read_response(timeout=5.0)
        second = c.read_response(timeout=5.0)
        closed, extra = c.wait_closed(timeout=2.0)
    where = f"pieces={[len(p) for p in pieces]}"
    assert first.status == 200 and first.body == b"ok", (where, first)
    assert second.status == 200 and second.body == b"ok", (where, second)
    assert closed and extra == b"", (where, extra)
    reqs = probe.requests_since(mark)
    assert len(reqs) == 2, (where, reqs)
    post, get = reqs
    assert post.method == b"POST" and post.target == b"/frag", (where, post)
    assert post.header("X-Long-Header-Name") == [b"value-one"], (where, post)
    assert post.body == b"hello", (where, post)
    assert get.method == b"GET" and get.target == b"/second?q=1", (where, get)
    assert probe.errors == [], where


def test_pub10_one_byte_per_write(gw, probe):
    """PUB-10 run 1: the request pair sent one byte per send(), 1 ms apart (TCP_NODELAY).

    Sources: MagicStack/httptools#21 and PR #27; uvicorn#1263, #344; llhttp#412, #102;
    bjoern#133. Expected: exactly as one write - the upstream receives `POST /frag` with
    `X-Long-Header-Name: value-one` and body `hello`, then `GET /second?q=1`; the client gets
    two responses and the connection closes; no 400, no worker crash.
    """
    pids = gw.worker_pids()
    _send_fragmented(gw, probe, [FRAGMENTED[i:i + 1] for i in range(len(FRAGMENTED))], 0.001)
    assert gw.worker_pids() == pids, "a worker was replaced during the run"
    assert "Traceback" not in gw.output(), gw.output()[-3000:]


def test_pub10_every_two_way_split(gw, probe):
    """PUB-10 run 2: for every k in 1..len(R)-1, R[:k] and R[k:] in two send() calls 5 ms apart.

    Sources and expectation as run 1 (every split behaves like a single write).
    """
    pids = gw.worker_pids()
    for k in range(1, len(FRAGMENTED)):
        _send_fragmented(gw, probe, [FRAGMENTED[:k], FRAGMENTED[k:]], 0.005)
    assert gw.worker_pids() == pids, "a worker was replaced during the run"
    assert "Traceback" not in gw.output(), gw.output()[-3000:]
