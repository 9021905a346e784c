"""The installed httptools/llhttp still parses every case payload as the recorded baseline says.

fastgw itself drives a vendored llhttp 9.4.3 through its C API (fastgw/_core/vendor);
httptools, with the same llhttp, is the independent reader the fuzz harness and
these baseline checks use, and the case tests check fastgw's own answers end to end.

fastgw's smuggling defences rely on llhttp's strict mode for most of the cases
(README of the case corpus, "Library baseline"), and add its own checks where
llhttp accepts (PUB-04 `Chunked`, PUB-18 R3/R4, PUB-16 HEAD...). A different
llhttp (a new httptools wheel, or fastgw built with --use-system-llhttp) may
move that line: these tests fail when any payload of the corpus is accepted,
rejected, or split into messages differently from
shared/cases/baseline_httptools-0.9.0.txt (httptools 0.9.0, which bundles llhttp 9.4.3, the version fastgw vendors).

The table below is that baseline file in data form (payloads from
shared/cases/payloads.py; kind as baseline.py decides it: RESPONSE when the
payload starts with ``HTTP/``; the expected error text, or
``UPGRADE(offset=N)``, or None; the complete messages as (url or reason,
body)). Each payload is fed in one call and byte by byte, as baseline.py does.
"""

import httptools
import pytest

BASELINE = [
    ('PUB-01', 'A CL first, covers smuggled GET', 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 37\r\nTransfer-Encoding: chunked\r\n\r\n'
      b'0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n'),
     "HttpParserError: Transfer-Encoding can't be present with Content-Length",
     []),
    ('PUB-01', 'B TE first, CL covers only size line', 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n'
      b'20\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n\r\n0\r\n\r\n'),
     "HttpParserError: Content-Length can't be present with Transfer-Encoding",
     []),
    ('PUB-02', 'A 0 then N', 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 31\r\n\r\n'
      b'GET /evil HTTP/1.1\r\nHost: a\r\n\r\n'),
     'HttpParserError: Duplicate Content-Length',
     []),
    ('PUB-02', 'B N then 0', 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 31\r\nContent-Length: 0\r\n\r\n'
      b'GET /evil HTTP/1.1\r\nHost: a\r\n\r\n'),
     'HttpParserError: Duplicate Content-Length',
     []),
    ('PUB-02', 'C identical duplicates', 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello'),
     'HttpParserError: Duplicate Content-Length',
     []),
    ('PUB-02', 'D list 5, 5', 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello'),
     'HttpParserError: Invalid character in Content-Length',
     []),
    ('PUB-03', "CL=b'+10'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +10\r\n\r\n0123456789'),
     'HttpParserError: Invalid character in Content-Length',
     []),
    ('PUB-03', "CL=b'1_0'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1_0\r\n\r\n0123456789'),
     'HttpParserError: Invalid character in Content-Length',
     []),
    ('PUB-03', "CL=b'0x0a'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x0a\r\n\r\n0123456789'),
     'HttpParserError: Invalid character in Content-Length',
     []),
    ('PUB-03', "CL=b'-1'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n0123456789'),
     'HttpParserError: Invalid character in Content-Length',
     []),
    ('PUB-03', "CL=b'1 0'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\n0123456789'),
     'HttpParserError: Invalid character in Content-Length',
     []),
    ('PUB-03', "CL=b'10abc'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10abc\r\n\r\n0123456789'),
     'HttpParserError: Invalid character in Content-Length',
     []),
    ('PUB-03', "CL=b''", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n0123456789'),
     'HttpParserError: Empty Content-Length',
     []),
    ('PUB-03', "CL=b'99999999999999999999999'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n0123456789'),
     'HttpParserError: Content-Length overflow',
     []),
    ('PUB-04', "TE=b'xchunked'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n1\r\nZ\r\n0\r\n\r\n'),
     'HttpParserError: Request has invalid `Transfer-Encoding`',
     []),
    ('PUB-04', "TE=b'identity'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n1\r\nZ\r\n0\r\n\r\n'),
     'HttpParserError: Request has invalid `Transfer-Encoding`',
     []),
    ('PUB-04', "TE=b'chunked, identity'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n1\r\nZ\r\n0\r\n'
      b'\r\n'),
     'HttpParserError: Invalid `Transfer-Encoding` header value',
     []),
    ('PUB-04', "TE=b'chunkedchunked'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedchunked\r\n\r\n1\r\nZ\r\n0\r\n'
      b'\r\n'),
     'HttpParserError: Request has invalid `Transfer-Encoding`',
     []),
    ('PUB-04', "TE=b'gzip'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n1\r\nZ\r\n0\r\n\r\n'),
     'HttpParserError: Request has invalid `Transfer-Encoding`',
     []),
    ('PUB-04', "TE=b'Chunked'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n1\r\nZ\r\n0\r\n\r\n'),
     None,
     [(b'/', b'Z')]),
    ('PUB-05', 'A folded Content-Length', 'REQUEST',
     (b'POST /hello HTTP/1.1\r\nHost: a\r\nFoo: bar\r\n Content-Length: 30\r\n\r\n'
      b'GET /bye HTTP/1.1\r\nHost: a\r\n\r\n'),
     'HttpParserError: Unexpected whitespace after header value',
     []),
    ('PUB-05', 'B fold after TE value', 'REQUEST',
     (b'PUT /url HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n  abc\r\n\r\n5\r\nWorld\r\n'
      b'0\r\n\r\n'),
     'HttpParserError: Unexpected whitespace after header value',
     []),
    ('PUB-06', 'A LF hides TE line', 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nx:x\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n\r\n'),
     'HttpParserError: Missing expected CR after header value',
     []),
    ('PUB-06', 'B LF-only request', 'REQUEST',
     (b'GET / HTTP/1.1\nHost: a\nConnection: close\n\n'),
     'HttpParserError: Expected CRLF after version',
     []),
    ('PUB-07', 'A bare CR then TE', 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nX-Abc: \rxTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n'
      b'\r\n'),
     'HttpParserError: Expected LF after CR',
     []),
    ('PUB-07', 'B NUL in Host', 'REQUEST',
     (b'GET / HTTP/1.1\r\nHost: example.test\x00.attacker.test\r\n\r\n'),
     'HttpParserError: Invalid header value char',
     []),
    ('PUB-07', 'C bare CR mid value', 'REQUEST',
     (b'GET / HTTP/1.1\r\nHost: a\r\nX-Test: va\rlue\r\n\r\n'),
     'HttpParserError: Missing expected LF after header value',
     []),
    ('PUB-08', "size=b'1these-bytes-never-get-validated'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n'
      b'1these-bytes-never-get-validated\r\nZ\r\n0\r\n\r\n'),
     'HttpParserError: Invalid character in chunk size',
     []),
    ('PUB-08', "size=b'0x1'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\nZ\r\n0\r\n\r\n'),
     'HttpParserError: Invalid character in chunk size',
     []),
    ('PUB-08', "size=b'+1'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n+1\r\nZ\r\n0\r\n\r\n'),
     'HttpParserError: Invalid character in chunk size',
     []),
    ('PUB-08', "size=b'1 '", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nZ\r\n0\r\n\r\n'),
     'HttpParserError: Invalid character in chunk size',
     []),
    ('PUB-08', "size=b' 1'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n 1\r\nZ\r\n0\r\n\r\n'),
     'HttpParserError: Invalid character in chunk size',
     []),
    ('PUB-08', "size=b'1_'", 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1_\r\nZ\r\n0\r\n\r\n'),
     'HttpParserError: Invalid character in chunk size',
     []),
    ('PUB-08', 'size overflow 17 hex digits', 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\n'
      b'Z\r\n0\r\n\r\n'),
     'HttpParserError: Chunk size overflow',
     []),
    ('PUB-09', 'A nginx runaway chunk', 'REQUEST',
     (b'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n'
      b'\r\n4\r\nSEE-THIS\r\n0\r\n\r\n'),
     'HttpParserError: Expected LF after chunk data',
     []),
    ('PUB-09', 'B two garbage bytes instead of CRLF', 'REQUEST',
     (b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nAAAAAXX0\r\n\r\n'),
     'HttpParserError: Expected LF after chunk data',
     []),
    ('PUB-10', 'A send 1 byte per write', 'REQUEST',
     (b'POST /frag HTTP/1.1\r\nHost: a\r\nX-Long-Header-Name: value-one\r\n'
      b'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /second?q=1 HTTP/1.1\r\n'
      b'Host: a\r\nConnection: close\r\n\r\n'),
     None,
     [(b'/frag', b'hello'), (b'/second?q=1', b'')]),
    ('PUB-11', 'client request', 'REQUEST',
     (b'GET /echo HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Internal-Token\r\n'
      b'Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n'
      b'Upgrade: foo/1\r\nX-Internal-Token: secret\r\nX-Keep: 1\r\n\r\n'),
     None,
     [(b'/echo', b'')]),
    ('PUB-11', 'upstream response', 'RESPONSE',
     (b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Backend-Secret\r\n'
      b'Keep-Alive: timeout=5, max=100\r\nX-Backend-Secret: s3cr3t\r\nX-Keep: 1\r\n\r\nok'),
     None,
     [(b'OK', b'ok')]),
    ('PUB-12', 'A two client XFF lines', 'REQUEST',
     (b'GET /echo HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 192.0.2.1\r\n'
      b'X-Forwarded-For: 198.51.100.7\r\n\r\n'),
     None,
     [(b'/echo', b'')]),
    ('PUB-12', 'B no client XFF', 'REQUEST',
     (b'GET /echo HTTP/1.1\r\nHost: a\r\n\r\n'),
     None,
     [(b'/echo', b'')]),
    ('PUB-13', 'A HTTP/1.0 keep-alive', 'REQUEST',
     (b'GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n'),
     None,
     [(b'/a', b'')]),
    ('PUB-13', 'B HTTP/1.0 plain (same conn, after A)', 'REQUEST',
     (b'GET /b HTTP/1.0\r\nHost: a\r\n\r\n'),
     None,
     [(b'/b', b'')]),
    ('PUB-13', 'upstream response', 'RESPONSE',
     (b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'),
     None,
     [(b'OK', b'hello')]),
    ('PUB-14', 'A one write', 'REQUEST',
     (b'GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /fast HTTP/1.1\r\nHost: a\r\n\r\n'
      b'GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /after-close HTTP/1.1\r\n'
      b'Host: a\r\n\r\n'),
     'HttpParserError: Data after `Connection: close`',
     [(b'/slow', b''), (b'/fast', b''), (b'/last', b'')]),
    ('PUB-14', 'B valid then invalid', 'REQUEST',
     (b'GET / HTTP/1.1\r\nHost: a\r\n\r\nInvalid\r\n\r\n'),
     'HttpParserInvalidMethodError: Invalid method encountered',
     [(b'/', b'')]),
    ('PUB-15', "A 1.1 headers only, body 'hello' after 100", 'REQUEST',
     (b'POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n'),
     None,
     []),
    ('PUB-15', 'B 1.0', 'REQUEST',
     (b'POST /upload HTTP/1.0\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n'),
     None,
     []),
    ('PUB-15', 'C mixed case', 'REQUEST',
     (b'POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n'),
     None,
     []),
    ('PUB-15', 'D upstream early final response', 'RESPONSE',
     (b'HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'),
     None,
     [(b'Payload Too Large', b'')]),
    ('PUB-15', 'E unknown expectation', 'REQUEST',
     (b'POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: foo\r\n\r\nhello'),
     None,
     [(b'/upload', b'hello')]),
    ('PUB-16', 'HEAD request', 'REQUEST',
     (b'HEAD /length/head1 HTTP/1.1\r\nHost: a\r\n\r\n'),
     None,
     [(b'/length/head1', b'')]),
    ('PUB-16', 'upstream HEAD response (no body)', 'RESPONSE',
     (b'HTTP/1.1 200 OK\r\nX-Connection: 1\r\nContent-Length: 26\r\n\r\n'),
     None,
     []),
    ('PUB-16', 'upstream 304 with CL 100', 'RESPONSE',
     (b'HTTP/1.1 304 Not Modified\r\nX-Connection: 1\r\nContent-Length: 100\r\n\r\n'),
     None,
     [(b'Not Modified', b'')]),
    ('PUB-16', 'upstream 304 without CL', 'RESPONSE',
     (b'HTTP/1.1 304 Not Modified\r\nX-Connection: 1\r\n\r\n'),
     None,
     [(b'Not Modified', b'')]),
    ('PUB-16', 'upstream 204', 'RESPONSE',
     (b'HTTP/1.1 204 No Content\r\nX-Connection: 1\r\n\r\n'),
     None,
     [(b'No Content', b'')]),
    ('PUB-17', 'A chunked + close', 'RESPONSE',
     (b'HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n'
      b'SEE-THIS\r\n0\r\n\r\n'),
     None,
     [(b'OK', b'SEE-THIS')]),
    ('PUB-17', 'B close-delimited, no length', 'RESPONSE',
     (b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nTEST-OK-IF-YOU-SEE-THIS\n'),
     None,
     []),
    ('PUB-17', 'C CL 24, upstream never closes', 'RESPONSE',
     (b'HTTP/1.1 200 OK\r\nContent-Length: 24\r\nConnection: close\r\n\r\n'
      b'TEST-OK-IF-YOU-SEE-THIS\n'),
     None,
     [(b'OK', b'TEST-OK-IF-YOU-SEE-THIS\n')]),
    ('PUB-17', 'D chunked with trailers incl. CL', 'RESPONSE',
     (b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5\r\n'
      b'hello\r\n0\r\nX-Checksum: abc\r\nContent-Length: 999\r\n\r\n'),
     "HttpParserError: Content-Length can't be present with Transfer-Encoding",
     []),
    ('PUB-17', 'D2 chunked with trailer', 'RESPONSE',
     (b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5\r\n'
      b'hello\r\n0\r\nX-Checksum: abc\r\n\r\n'),
     None,
     [(b'OK', b'hello')]),
    ('PUB-18', 'invalid length', 'RESPONSE',
     (b'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: foo\r\n\r\n'),
     'HttpParserError: Invalid character in Content-Length',
     []),
    ('PUB-18', 'duplicate length', 'RESPONSE',
     (b'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n'),
     'HttpParserError: Duplicate Content-Length',
     []),
    ('PUB-18', 'unknown TE', 'RESPONSE',
     (b'HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: foo\r\n\r\n'),
     None,
     []),
    ('PUB-18', 'duplicate TE', 'RESPONSE',
     (b'HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n'
      b'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n'),
     None,
     [(b'OK', b'')]),
    ('PUB-18', 'CL then TE', 'RESPONSE',
     (b'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n'
      b'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n'),
     "HttpParserError: Transfer-Encoding can't be present with Content-Length",
     []),
    ('PUB-18', 'TE then CL', 'RESPONSE',
     (b'HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n'
      b'Content-Length: 0\r\n\r\n0\r\n\r\n'),
     "HttpParserError: Content-Length can't be present with Transfer-Encoding",
     []),
    ('PUB-18', 'not HTTP at all', 'REQUEST',
     (b'HELLO WORLD\r\n\r\n'),
     'HttpParserInvalidMethodError: Invalid method encountered',
     []),
    ('PUB-19', 'G', 'REQUEST',
     (b'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'),
     None,
     [(b'/', b'')]),
    ('PUB-19', 'P', 'REQUEST',
     (b'POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello'),
     None,
     [(b'/p', b'hello')]),
    ('PUB-22', 'A handshake + early frame in same write', 'REQUEST',
     (b'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n'
      b'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'
      b'\x81\x857\xfa!=\x7f\x9fMQX'),
     'UPGRADE(offset=154)',
     [(b'/ws', b'')]),
    ('PUB-22', 'upstream 101', 'RESPONSE',
     (b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
      b'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n'),
     'UPGRADE(offset=129)',
     [(b'Switching Protocols', b'')]),
    ('PUB-22', 'B request without Upgrade (upstream still answers 101)', 'REQUEST',
     (b'GET /ws HTTP/1.1\r\nHost: a\r\n\r\n'),
     None,
     [(b'/ws', b'')]),
]


class _Recorder:
    """httptools callbacks that collect complete messages (url or reason, body)."""

    def __init__(self):
        self.done = []
        self.cur = None

    def on_message_begin(self):
        self.cur = [b"", b""]

    def on_url(self, url):
        self.cur[0] += url

    def on_status(self, status):
        self.cur[0] += status

    def on_body(self, body):
        self.cur[1] += body

    def on_message_complete(self):
        self.done.append(tuple(self.cur))
        self.cur = None


def parse(data, response, bytewise):
    """Feed ``data`` to a fresh parser: ``(error text or None, complete messages)``."""
    rec = _Recorder()
    parser = (httptools.HttpResponseParser if response else httptools.HttpRequestParser)(rec)
    try:
        if bytewise:
            for i in range(len(data)):
                parser.feed_data(data[i:i + 1])
        else:
            parser.feed_data(data)
        error = None
    except httptools.HttpParserUpgrade as exc:
        error = "UPGRADE(offset=%s)" % (exc.args[0] if exc.args else "?")
    except httptools.HttpParserError as exc:
        error = "%s: %s" % (type(exc).__name__, exc)
    return error, rec.done


def _cases(kind):
    return pytest.mark.parametrize(
        "data,error,messages",
        [(d, e, m) for _, _, k, d, e, m in BASELINE if k == kind],
        ids=[f"{c} {label}" for c, label, k, _, _, _ in BASELINE if k == kind])


@_cases("REQUEST")
@pytest.mark.parametrize("bytewise", [False, True], ids=["one call", "byte by byte"])
def test_llhttp_request_baseline(data, error, messages, bytewise):
    """Every request payload of the corpus is rejected or accepted as in the httptools 0.9.0 baseline."""
    got_error, got_messages = parse(data, response=False, bytewise=bytewise)
    if bytewise and error is not None and error.startswith("UPGRADE"):
        # Fed byte by byte, the upgrade offset is relative to the last byte fed.
        assert got_error is not None and got_error.startswith("UPGRADE"), got_error
    else:
        assert got_error == error
    assert [tuple(m) for m in got_messages] == [tuple(m) for m in messages]


@_cases("RESPONSE")
@pytest.mark.parametrize("bytewise", [False, True], ids=["one call", "byte by byte"])
def test_llhttp_response_baseline(data, error, messages, bytewise):
    """Every response payload of the corpus is rejected or accepted as in the httptools 0.9.0 baseline."""
    got_error, got_messages = parse(data, response=True, bytewise=bytewise)
    if bytewise and error is not None and error.startswith("UPGRADE"):
        assert got_error is not None and got_error.startswith("UPGRADE"), got_error
    else:
        assert got_error == error
    assert [tuple(m) for m in got_messages] == [tuple(m) for m in messages]
