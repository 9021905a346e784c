"""Request routing: URI normalisation, virtual server selection and nginx's location match.

All tables are built once at configuration time; a request walks them.
Paths and names are bytes throughout (no decoding in the hot path).
"""

import re

from fastgw._core.scan cimport has_byte, has_sub

cdef bytes _HEX = b"0123456789abcdefABCDEF"


cdef inline int _hexval(int c):
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


cpdef bytes normalize_path(bytes path):
    """nginx's ``$uri`` from the path part of a request target (query excluded).

    Percent-escapes are decoded, runs of ``/`` merged (``merge_slashes on``),
    ``.`` and ``..`` segments resolved (RFC 3986 §5.2.4), as
    ngx_http_parse_complex_uri does. Returns None for a request nginx answers
    400: a bad escape, a decoded NUL, or ``..`` climbing above the root.
    """
    cdef Py_ssize_t n = len(path), i = 0
    cdef const unsigned char[:] p
    cdef int hi, lo, c
    if n == 0 or path[0] != 47:  # b"/"
        return None
    if not has_byte(path, 37) and not has_sub(path, b"/.") and not has_sub(path, b"//"):
        return path
    p = path
    out = bytearray()
    while i < n:
        c = p[i]
        if c == 37:  # %
            if i + 2 >= n:
                return None
            hi = _hexval(p[i + 1])
            lo = _hexval(p[i + 2])
            if hi < 0 or lo < 0:
                return None
            c = hi * 16 + lo
            if c == 0:
                return None
            i += 3
        else:
            i += 1
        out.append(c)
    segments = []
    for seg in bytes(out).split(b"/")[1:]:
        if seg == b"" or seg == b".":
            continue
        if seg == b"..":
            if not segments:
                return None
            segments.pop()
            continue
        segments.append(seg)
    result = b"/" + b"/".join(segments)
    # Keep a trailing slash ("/a/" and "/a/." both mean the directory).
    if len(result) > 1 and (out.endswith(b"/") or out.endswith(b"/.") or out.endswith(b"/..")):
        result += b"/"
    return result


cpdef bytes normalize_host(bytes host):
    """The Host header's name for server_name matching: lower case, no port, no trailing dot.

    Returns None for a Host nginx rejects with 400 (empty, empty after stripping, a
    ``/``, ``\\``, control character or space, or ``..``).
    """
    cdef Py_ssize_t end, i
    cdef const unsigned char* p
    cdef unsigned char c
    cdef bint lower = True
    if not host:
        return None  # nginx: an empty Host is a 400 ("client sent invalid host header")
    if host[0] == 91:  # "[": IPv6 literal, then nothing or ":port"
        end = host.find(b"]")
        if end < 0:
            return None
        port = host[end + 1:]
        if port and (port[0] != 58 or (len(port) > 1 and not port[1:].isdigit())):
            return None  # "[::1]/../x": nginx says 400 too
        return host[:end + 1].lower()
    end = host.rfind(b":")
    if end >= 0:
        port = host[end + 1:]
        if port and not port.isdigit():
            return None
        host = host[:end]
    if host.endswith(b"."):
        host = host[:-1]
    if not host or has_sub(host, b".."):
        return None
    p = host
    for i in range(len(host)):
        c = p[i]
        if c <= 32 or c == 47 or c == 92 or c == 127:
            return None
        if 65 <= c <= 90:
            lower = False
    return host if lower else host.lower()


cdef class Router:
    """nginx's location match over ``(modifier, pattern, value)`` entries in file order.

    An ``=`` match wins at once; otherwise the longest matching prefix (plain
    or ``^~``) is found and wins if it is ``^~``; otherwise the regexes
    (``~`` case-sensitive, ``~*`` not) are tried in file order and the first
    match wins; otherwise the longest prefix found earlier, or None.
    """

    def __init__(self, entries):
        self.exact = {}
        self.prefixes = []
        self.regexes = []
        for modifier, pattern, value in entries:
            bpattern = pattern.encode("utf-8") if isinstance(pattern, str) else pattern
            if modifier == "=":
                self.exact[bpattern] = value
            elif modifier in ("", "^~"):
                self.prefixes.append((bpattern, value, modifier == "^~"))
            elif modifier == "~":
                self.regexes.append((re.compile(bpattern), value))
            elif modifier == "~*":
                self.regexes.append((re.compile(bpattern, re.IGNORECASE), value))
            else:
                raise ValueError(f"unknown location modifier {modifier!r}")
        # Longest first, so the first prefix that matches is the longest.
        self.prefixes.sort(key=lambda item: len(item[0]), reverse=True)

    cpdef object match(self, bytes path):
        cdef object value = self.exact.get(path)
        cdef tuple item
        if value is not None:
            return value
        cdef object best = None
        for item in self.prefixes:
            if path.startswith(<bytes>item[0]):
                if item[2]:
                    return item[1]
                best = item[1]
                break
        for item in self.regexes:
            if item[0].search(path) is not None:
                return item[1]
        return best


cdef class VirtualHosts:
    """server_name selection among the servers of one listening address.

    nginx's order: exact name, longest ``*.suffix`` wildcard, longest
    ``prefix.*`` wildcard, first regex (``~``) in file order, then the
    default server (``default_server``, else the first server).
    ``.example.com`` means both ``example.com`` and ``*.example.com``.
    """

    def __init__(self, servers, default=None):
        self.exact = {}
        self.wild_front = []
        self.wild_back = []
        self.regexes = []
        self.default = default
        for names, value in servers:
            if self.default is None:
                self.default = value
            for name in names:
                if name.startswith("~"):
                    self.regexes.append((re.compile(name[1:].encode(), re.IGNORECASE), value))
                    continue
                bname = name.lower().encode("idna" if not name.isascii() else "ascii")
                if bname.startswith(b"*."):
                    self.wild_front.append((bname[1:], value))
                elif bname.startswith(b"."):
                    self.exact.setdefault(bname[1:], value)
                    self.wild_front.append((bname, value))
                elif bname.endswith(b".*"):
                    self.wild_back.append((bname[:-1], value))
                else:
                    self.exact.setdefault(bname, value)
        self.wild_front.sort(key=lambda item: len(item[0]), reverse=True)
        self.wild_back.sort(key=lambda item: len(item[0]), reverse=True)

    cpdef object find(self, bytes host):
        """The server for a normalised host name (see normalize_host)."""
        cdef object value
        cdef tuple item
        if host is None:
            return self.default
        value = self.exact.get(host)
        if value is not None:
            return value
        for item in self.wild_front:
            if host.endswith(<bytes>item[0]):
                return item[1]
        for item in self.wild_back:
            if host.startswith(<bytes>item[0]):
                return item[1]
        for item in self.regexes:
            if item[0].search(host) is not None:
                return item[1]
        return self.default
