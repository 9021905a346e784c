"""nginx value syntax: sizes, times, flags and addresses.

Every parser raises ``ValueError`` with a message fit to be shown to the user
after ``invalid value``; the loader adds the file and line.
"""

import re

_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
# nginx's ngx_parse_time: units may be combined ("1h 30m", "1m30s"), each at most once.
_TIME_UNITS = {
    "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
    "w": 7 * 86400.0, "M": 30 * 86400.0, "y": 365 * 86400.0,
}
_TIME_PART = re.compile(r"\s*([0-9]+)\s*(ms|s|m|h|d|w|M|y)?")
# nginx requires the units of a combined time from the largest to the smallest.
_TIME_ORDER = ("y", "M", "w", "d", "h", "m", "s", "ms")


def parse_size(text):
    """Parse an nginx size (``512``, ``8k``, ``1m``, ``2g``, case-insensitive unit).

    Returns the size in bytes (int). Raises ValueError on anything else,
    including a sign, a fraction or an empty string.
    """
    m = re.fullmatch(r"([0-9]+)([kKmMgG]?)", text)
    if not m:
        raise ValueError(f'invalid size "{text}"')
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def parse_time(text):
    """Parse an nginx time (``500ms``, ``5s``, ``1m30s``, ``1h 30m``, bare ``60`` = seconds).

    Returns seconds as a float. Raises ValueError for an empty value, an
    unknown unit or text left over.
    """
    pos, total, last = 0, 0.0, -1
    text = text.strip()
    if not text:
        raise ValueError('invalid time ""')
    while pos < len(text):
        m = _TIME_PART.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f'invalid time "{text}"')
        unit = m.group(2) or "s"
        rank = _TIME_ORDER.index(unit)
        if rank <= last:
            raise ValueError(f'invalid time "{text}"')
        last = rank
        total += int(m.group(1)) * _TIME_UNITS[unit]
        pos = m.end()
    return total


def parse_flag(text):
    """Parse ``on``/``off`` (any case) into a bool; ValueError otherwise (nginx's ngx_conf_set_flag_slot)."""
    if text.lower() == "on":
        return True
    if text.lower() == "off":
        return False
    raise ValueError(f'invalid value "{text}", it must be "on" or "off"')


def parse_int(text, minimum=0):
    """Parse a non-negative decimal integer (digits only, no sign) not below ``minimum``."""
    if not text.isdigit() or not text.isascii():
        raise ValueError(f'invalid number "{text}"')
    value = int(text)
    if value < minimum:
        raise ValueError(f'value "{text}" must be at least {minimum}')
    return value


def parse_address(text, default_host="0.0.0.0"):
    """Parse ``HOST:PORT``, ``PORT``, ``[IPv6]:PORT`` or ``*:PORT`` (nginx's ngx_parse_url for listen).

    Returns ``(host, port)`` with port an int in 1..65535. A missing host
    becomes ``default_host``. Raises ValueError on a bad port or an empty host.
    """
    host, port = default_host, text
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f'invalid address "{text}"')
        host, rest = text[1:end], text[end + 1:]
        if not rest.startswith(":"):
            raise ValueError(f'no port in "{text}"')
        port = rest[1:]
    elif ":" in text:
        host, _, port = text.rpartition(":")
        if host == "*":
            host = default_host
    elif not (text.isdigit() and text.isascii()):
        raise ValueError(f'no port in "{text}"')
    if not host:
        raise ValueError(f'invalid host in "{text}"')
    if not (port.isdigit() and port.isascii()) or not 0 < int(port) < 65536:
        raise ValueError(f'invalid port in "{text}"')
    return host, int(port)
