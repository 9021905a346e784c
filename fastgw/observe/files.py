"""Opening log files the way nginx does: append-only, created with 0644, shared safely.

A file opened with O_APPEND can be written by the master and every worker at
once: each ``write`` lands whole at the end, so lines never interleave.
"""

import os

_STD = {"stderr": 2, "/dev/stderr": 2, "stdout": 1, "/dev/stdout": 1}


def open_log(path):
    """A file descriptor for appending to ``path`` (``stderr``/``stdout`` map to fd 2/1).

    Creates the file and its directory when missing. Raises OSError when the
    path cannot be opened.
    """
    if path in _STD:
        return _STD[path]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def close_log(fd):
    """Close a descriptor from :func:`open_log` (the standard streams stay open)."""
    if fd is not None and fd > 2:
        os.close(fd)
