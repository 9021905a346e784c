# Copied from the case corpus (shared/cases/payloads.py) as the fuzzer's seeds; keep in step with it.
# flake8: noqa
"""Raw request/response payloads for the PUBLIC fastgw case corpus (cases_public.md).
Pure data; lengths are computed so that declared framing is exactly as described."""

def cl_te():
    smug = b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
    body_a = b"0\r\n\r\n" + smug
    a = (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n" % len(body_a)) + body_a
    size_line = b"%x\r\n" % len(smug)
    body_b = size_line + smug + b"\r\n0\r\n\r\n"
    b = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
         b"Content-Length: %d\r\n\r\n" % len(size_line)) + body_b
    return [("A CL first, covers smuggled GET", a), ("B TE first, CL covers only size line", b)]

def dup_cl():
    smug = b"GET /evil HTTP/1.1\r\nHost: a\r\n\r\n"
    a = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(smug) + smug
    b = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nContent-Length: 0\r\n\r\n" % len(smug) + smug
    c = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
    d = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello"
    return [("A 0 then N", a), ("B N then 0", b), ("C identical duplicates", c), ("D list 5, 5", d)]

def bad_cl():
    out = []
    for v in [b"+10", b"1_0", b"0x0a", b"-1", b"1 0", b"10abc", b"", b"99999999999999999999999"]:
        out.append(("CL=%r" % v, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + v + b"\r\n\r\n0123456789"))
    return out

def bad_te():
    out = []
    for v in [b"xchunked", b"identity", b"chunked, identity", b"chunkedchunked", b"gzip", b"Chunked"]:
        out.append(("TE=%r" % v, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + v + b"\r\n\r\n1\r\nZ\r\n0\r\n\r\n"))
    return out

def obs_fold():
    nxt = b"GET /bye HTTP/1.1\r\nHost: a\r\n\r\n"
    a = (b"POST /hello HTTP/1.1\r\nHost: a\r\nFoo: bar\r\n Content-Length: %d\r\n\r\n" % len(nxt)) + nxt
    b = b"PUT /url HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n  abc\r\n\r\n5\r\nWorld\r\n0\r\n\r\n"
    return [("A folded Content-Length", a), ("B fold after TE value", b)]

def bare_lf():
    a = b"POST / HTTP/1.1\r\nHost: a\r\nx:x\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n\r\n"
    b = b"GET / HTTP/1.1\nHost: a\nConnection: close\n\n"
    return [("A LF hides TE line", a), ("B LF-only request", b)]

def ctl_in_value():
    a = b"POST / HTTP/1.1\r\nHost: a\r\nX-Abc: \rxTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n\r\n"
    b = b"GET / HTTP/1.1\r\nHost: example.test\x00.attacker.test\r\n\r\n"
    c = b"GET / HTTP/1.1\r\nHost: a\r\nX-Test: va\rlue\r\n\r\n"
    return [("A bare CR then TE", a), ("B NUL in Host", b), ("C bare CR mid value", c)]

def bad_chunk_size():
    out = []
    for v in [b"1these-bytes-never-get-validated", b"0x1", b"+1", b"1 ", b" 1", b"1_"]:
        out.append(("size=%r" % v, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + v + b"\r\nZ\r\n0\r\n\r\n"))
    out.append(("size overflow 17 hex digits",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nZ\r\n0\r\n\r\n"))
    return out

def runaway_chunk():
    a = (b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"4\r\nSEE-THIS\r\n0\r\n\r\n")
    b = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nAAAAAXX0\r\n\r\n"
    return [("A nginx runaway chunk", a), ("B two garbage bytes instead of CRLF", b)]

def fragmented():
    a = (b"POST /frag HTTP/1.1\r\nHost: a\r\nX-Long-Header-Name: value-one\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
         b"GET /second?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    return [("A send 1 byte per write", a)]

def hop_by_hop():
    req = (b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Internal-Token\r\n"
           b"Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n"
           b"Upgrade: foo/1\r\nX-Internal-Token: secret\r\nX-Keep: 1\r\n\r\n")
    resp = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Backend-Secret\r\n"
            b"Keep-Alive: timeout=5, max=100\r\nX-Backend-Secret: s3cr3t\r\nX-Keep: 1\r\n\r\nok")
    return [("client request", req), ("upstream response", resp)]

def xff():
    a = b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n"
    b = b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"
    return [("A two client XFF lines", a), ("B no client XFF", b)]

def http10():
    a = b"GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"
    b = b"GET /b HTTP/1.0\r\nHost: a\r\n\r\n"
    up = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    return [("A HTTP/1.0 keep-alive", a), ("B HTTP/1.0 plain (same conn, after A)", b), ("upstream response", up)]

def pipelined():
    a = (b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /fast HTTP/1.1\r\nHost: a\r\n\r\n"
         b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
         b"GET /after-close HTTP/1.1\r\nHost: a\r\n\r\n")
    b = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nInvalid\r\n\r\n"
    return [("A one write", a), ("B valid then invalid", b)]

def expect():
    a = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    b = b"POST /upload HTTP/1.0\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    c = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n"
    d_up = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    e = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: foo\r\n\r\nhello"
    return [("A 1.1 headers only, body 'hello' after 100", a), ("B 1.0", b), ("C mixed case", c),
            ("D upstream early final response", d_up), ("E unknown expectation", e)]

def bodyless():
    head_req = b"HEAD /length/head1 HTTP/1.1\r\nHost: a\r\n\r\n"
    head_up = b"HTTP/1.1 200 OK\r\nX-Connection: 1\r\nContent-Length: 26\r\n\r\n"
    up_304len = b"HTTP/1.1 304 Not Modified\r\nX-Connection: 1\r\nContent-Length: 100\r\n\r\n"
    up_304 = b"HTTP/1.1 304 Not Modified\r\nX-Connection: 1\r\n\r\n"
    up_204 = b"HTTP/1.1 204 No Content\r\nX-Connection: 1\r\n\r\n"
    return [("HEAD request", head_req), ("upstream HEAD response (no body)", head_up),
            ("upstream 304 with CL 100", up_304len), ("upstream 304 without CL", up_304),
            ("upstream 204", up_204)]

def up_framing():
    a = b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nSEE-THIS\r\n0\r\n\r\n"
    b = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nTEST-OK-IF-YOU-SEE-THIS\n"
    c = b"HTTP/1.1 200 OK\r\nContent-Length: 24\r\nConnection: close\r\n\r\nTEST-OK-IF-YOU-SEE-THIS\n"
    d = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
         b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nContent-Length: 999\r\n\r\n")
    d2 = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
          b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n")
    return [("A chunked + close", a), ("B close-delimited, no length", b),
            ("C CL 24, upstream never closes", c), ("D chunked with trailers incl. CL", d),
            ("D2 chunked with trailer", d2)]

def up_bad_framing():
    base = b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
    return [
        ("invalid length", base + b"Content-Length: foo\r\n\r\n"),
        ("duplicate length", base + b"Content-Length: 0\r\nContent-Length: 0\r\n\r\n"),
        ("unknown TE", base + b"Transfer-Encoding: foo\r\n\r\n"),
        ("duplicate TE", base + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("CL then TE", base + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE then CL", base + b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n"),
        ("not HTTP at all", b"HELLO WORLD\r\n\r\n"),
    ]

def websocket():
    hs = (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
          b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    early = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"   # masked text frame "Hello" (RFC 6455 example)
    up101 = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    noup = b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n"
    return [("A handshake + early frame in same write", hs + early), ("upstream 101", up101),
            ("B request without Upgrade (upstream still answers 101)", noup)]

def stale_pool():
    g = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    p = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    return [("G", g), ("P", p)]

ALL = {
    "PUB-01": cl_te, "PUB-02": dup_cl, "PUB-03": bad_cl, "PUB-04": bad_te, "PUB-05": obs_fold,
    "PUB-06": bare_lf, "PUB-07": ctl_in_value, "PUB-08": bad_chunk_size, "PUB-09": runaway_chunk,
    "PUB-10": fragmented, "PUB-11": hop_by_hop, "PUB-12": xff, "PUB-13": http10, "PUB-14": pipelined,
    "PUB-15": expect, "PUB-16": bodyless, "PUB-17": up_framing, "PUB-18": up_bad_framing,
    "PUB-19": stale_pool, "PUB-22": websocket,
}
