"""Opening log files the way nginx does: append-only, created with 0644, shared safely.

A file opened with O_APPEND can be written by the master and every worker at
once: each ``write`` lands whole at the end, so lines never interleave.
"""

import os

_STD = {"stderr": 2, "/dev/stderr": 2, "stdout": 1, "/dev/stdout": 1}


def open_log(path):
    """A file descriptor for appending to ``path`` (``stderr``/``stdout`` map to fd 2/1).

    Creates the file when missing, never its directory (nginx does not either:
    a typo must not scatter directories over the disk). Raises OSError when
    the path cannot be opened.
    """
    if path in _STD:
        return _STD[path]
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def log_paths(config):
    """Every log file a configuration writes, main error log first (list of paths, no duplicates)."""
    paths = [config.error_log[0]]
    for server in config.http.servers:
        for settings in [server.settings] + [loc.settings for loc in server.locations]:
            paths.append(settings.error_log[0])
            paths.extend(log[0] for log in settings.access_log)
    return list(dict.fromkeys(p for p in paths if p not in _STD))


def check_files(config):
    """Make sure every log file and the pid file can be written, as nginx checks at start and -t.

    Creates ``PREFIX/logs`` when missing (the default place of logs and the pid
    file), nothing else. Returns None; raises OSError naming the failing path
    as ``open() "PATH" failed (ERRNO: REASON)``.
    """
    os.makedirs(os.path.join(config.prefix, "logs"), exist_ok=True)
    for path in log_paths(config):
        try:
            close_log(open_log(path))
        except OSError as exc:
            raise OSError(exc.errno, f'open() "{path}" failed ({exc.errno}: {exc.strerror})') from None
    pid_dir = os.path.dirname(config.pid) or "."
    if not os.access(pid_dir, os.W_OK):
        reason = "No such file or directory" if not os.path.isdir(pid_dir) else "Permission denied"
        raise OSError(2, f'open() "{config.pid}" failed ({2 if reason[0] == "N" else 13}: {reason})')


def close_log(fd):
    """Close a descriptor from :func:`open_log` (the standard streams stay open)."""
    if fd is not None and fd > 2:
        os.close(fd)
