"""nginx variables: names, codes, and templates compiled at config time.

A value such as ``"$host:$server_port"`` is compiled once into a
:class:`Template`: a tuple of parts, each either a bytes literal or a
variable reference ``(code, arg)`` where ``arg`` is the lower-case name
suffix for the prefix families (``$http_x_real_ip`` -> ``(HTTP, b"x-real-ip")``).
The hot path (fastgw._core.proxy) walks the parts; it never parses text.
"""

import re
from dataclasses import dataclass

# Codes are small ints so that the Cython evaluator can switch on them.
HOST, REMOTE_ADDR, REMOTE_PORT, PROXY_HOST, PROXY_PORT, PROXY_ADD_X_FORWARDED_FOR, SCHEME, \
    REQUEST_URI, URI, ARGS, IS_ARGS, REQUEST_METHOD, SERVER_NAME, SERVER_PORT, SERVER_ADDR, \
    SERVER_PROTOCOL, CONNECTION, CONNECTION_REQUESTS, PID, MSEC, CONTENT_LENGTH, CONTENT_TYPE, \
    HTTP, ARG, COOKIE, REQUEST, BINARY_REMOTE_ADDR, LIMIT_REQ_STATUS, LIMIT_CONN_STATUS, \
    STATUS, BODY_BYTES_SENT, BYTES_SENT, REQUEST_TIME, REQUEST_LENGTH, QUEUE_TIME, TIME_LOCAL, \
    TIME_ISO8601, REMOTE_USER, UPSTREAM_ADDR, UPSTREAM_STATUS, UPSTREAM_CONNECT_TIME, \
    UPSTREAM_HEADER_TIME, UPSTREAM_RESPONSE_TIME, MAP, \
    = range(44)

SIMPLE = {
    "host": HOST, "remote_addr": REMOTE_ADDR, "remote_port": REMOTE_PORT,
    "proxy_host": PROXY_HOST, "proxy_port": PROXY_PORT,
    "proxy_add_x_forwarded_for": PROXY_ADD_X_FORWARDED_FOR, "scheme": SCHEME,
    "request_uri": REQUEST_URI, "uri": URI, "document_uri": URI, "args": ARGS,
    "query_string": ARGS, "is_args": IS_ARGS, "request_method": REQUEST_METHOD,
    "server_name": SERVER_NAME, "server_port": SERVER_PORT, "server_addr": SERVER_ADDR,
    "server_protocol": SERVER_PROTOCOL, "connection": CONNECTION,
    "connection_requests": CONNECTION_REQUESTS, "pid": PID, "msec": MSEC,
    "content_length": CONTENT_LENGTH, "content_type": CONTENT_TYPE, "request": REQUEST,
    "binary_remote_addr": BINARY_REMOTE_ADDR, "limit_req_status": LIMIT_REQ_STATUS,
    "limit_conn_status": LIMIT_CONN_STATUS,
    # Mostly for log_format: their value is final when the request is logged.
    "status": STATUS, "body_bytes_sent": BODY_BYTES_SENT, "bytes_sent": BYTES_SENT,
    "request_time": REQUEST_TIME, "request_length": REQUEST_LENGTH, "queue_time": QUEUE_TIME,
    "time_local": TIME_LOCAL, "time_iso8601": TIME_ISO8601, "remote_user": REMOTE_USER,
    "upstream_addr": UPSTREAM_ADDR, "upstream_status": UPSTREAM_STATUS,
    "upstream_connect_time": UPSTREAM_CONNECT_TIME, "upstream_header_time": UPSTREAM_HEADER_TIME,
    "upstream_response_time": UPSTREAM_RESPONSE_TIME,
}
PREFIXED = {"http_": HTTP, "arg_": ARG, "cookie_": COOKIE}

_VAR = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")
# "${" not followed by a name and "}": an error, as in nginx.
_BAD_BRACE = re.compile(r"\$\{(?![A-Za-z0-9_]+\})([A-Za-z0-9_]*)")


class VariableError(ValueError):
    """A reference to a variable fastgw does not have (nginx: ``unknown "x" variable``)."""


@dataclass(frozen=True)
class Template:
    """A compiled value: ``parts`` is a tuple of bytes and ``(code, arg)`` pairs.

    ``static`` is the whole value as bytes when it has no variables (the hot
    path then uses it as is), else None. ``source`` is the text as written.
    """

    source: str
    parts: tuple
    static: bytes = None

    @property
    def names(self):
        """Names of the variables used, for error messages and tests."""
        return [p for p in _VAR.findall(self.source)]


# Names of the variables that `map` blocks define in the configuration being loaded
# (the loader sets it before it compiles anything, see map_variables).
_MAPPED = frozenset()


class map_variables:
    """``with map_variables(names):`` templates compiled inside may use ``$name`` for each
    variable a ``map`` block defines (nginx knows them wherever the block stands)."""

    def __init__(self, names):
        self.names = frozenset(names)

    def __enter__(self):
        global _MAPPED
        self.saved, _MAPPED = _MAPPED, self.names

    def __exit__(self, *exc):
        global _MAPPED
        _MAPPED = self.saved


def variable_ref(name):
    """``(code, arg)`` for a variable name without ``$``; ValueError if fastgw has no such variable."""
    if name in _MAPPED:
        return (MAP, name.encode("ascii"))
    if name in SIMPLE:
        return (SIMPLE[name], b"")
    for prefix, code in PREFIXED.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            suffix = name[len(prefix):].lower()
            if code == HTTP:
                # $http_x_real_ip names the header X-Real-IP (nginx maps _ to -).
                suffix = suffix.replace("_", "-")
            return (code, suffix.encode("ascii"))
    raise VariableError(f'unknown "{name}" variable')


def compile_template(text):
    """Compile ``text`` with ``$var`` / ``${var}`` references into a Template.

    Raises VariableError (a ValueError) naming an unknown variable, as nginx
    does at start.
    A ``$`` not followed by a name is kept literally.
    """
    bad = _BAD_BRACE.search(text)
    if bad:
        # nginx refuses "${status" and "${}" rather than writing them literally.
        raise VariableError(f'invalid variable name in "{text}"' if bad.group(1) == "" else
                            f'the closing bracket in "{bad.group(1)}" variable is missing')
    parts, pos = [], 0
    for m in _VAR.finditer(text):
        if m.start() > pos:
            parts.append(text[pos:m.start()].encode("utf-8"))
        parts.append(variable_ref(m.group(1) or m.group(2)))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:].encode("utf-8"))
    if all(isinstance(p, bytes) for p in parts):
        return Template(text, tuple(parts), b"".join(parts))
    return Template(text, tuple(parts), None)
