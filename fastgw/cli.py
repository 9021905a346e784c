"""The ``fastgw`` command: nginx's command line (design.md §3).

    fastgw [-c FILE] [-p PREFIX] [-g DIRECTIVES] [-t | -T] [-s SIGNAL] [-v | -V] [-q]

Messages go to standard error in nginx's words, so scripts written for nginx
read them the same way.
"""

import http.client
import os
import platform
import sys

import click

from fastgw import __version__

DEFAULT_CONF = "conf/fastgw.conf"


def _err(text):
    click.echo(f"fastgw: {text}", err=True)


def _version_details():
    import Cython  # noqa: F401 - only its version is reported; it may be absent at run time
    return Cython.__version__


def version_text(full):
    """``fastgw -v`` / ``-V`` output (str)."""
    lines = [f"fastgw version: fastgw/{__version__}"]
    if full:
        import uvloop

        from fastgw._core import MODULES, check_compiled

        try:
            compiled = check_compiled()
            state = "compiled: " + ", ".join(sorted(compiled))
        except ImportError as exc:
            state = f"NOT compiled ({exc})"
        lines.append(f"built by {platform.python_implementation()} {platform.python_version()} "
                     f"on {platform.system()} {platform.machine()}")
        try:
            lines.append(f"Cython {_version_details()} (build tool)")
        except ImportError:
            pass
        lines.append(f"hot path fastgw._core ({len(MODULES)} extensions) {state}")
        try:
            from fastgw._core.proxy import LLHTTP_VERSION
            llhttp = f"llhttp {LLHTTP_VERSION} (vendored, compiled into fastgw._core.proxy)"
        except ImportError:
            llhttp = "llhttp (fastgw._core.proxy not compiled)"
        lines.append(f"uvloop {uvloop.__version__}, {llhttp}")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "-?", "--help"]})
@click.option("-c", "conf", metavar="FILE", default=None,
              help=f"configuration file (default: {DEFAULT_CONF} under the prefix)")
@click.option("-p", "prefix", metavar="PREFIX", default=None,
              help="prefix for relative paths (default: the current directory)")
@click.option("-g", "directives", metavar="DIRECTIVES", default=None,
              help='main-context directives, e.g. -g "worker_processes 2;"')
@click.option("-t", "test", is_flag=True, help="test the configuration and exit")
@click.option("-T", "dump", is_flag=True, help="test the configuration, print it and exit")
@click.option("-s", "signal_name", type=click.Choice(["stop", "quit", "reload", "reopen"]),
              metavar="SIGNAL", help="send a signal to the master: stop, quit, reload, reopen")
@click.option("-v", "version", is_flag=True, help="show the version and exit")
@click.option("-V", "version_full", is_flag=True,
              help="show the version, the compiled extensions and library versions, and exit")
@click.option("-q", "quiet", is_flag=True, help="suppress non-error messages while testing the configuration")
def serve(conf, prefix, directives, test, dump, signal_name, version, version_full, quiet):
    """fastgw: an HTTP/1.1 reverse proxy and API gateway with nginx's configuration language.

    `fastgw top` shows a running instance live (`fastgw top --help`)."""
    from fastgw.config.errors import ConfigError, ConfigErrors
    from fastgw.config.loader import load

    if version or version_full:
        click.echo(version_text(version_full), err=True)
        if not (test or dump or signal_name):
            sys.exit(0)
    prefix = os.path.abspath(prefix or os.getcwd())
    path = os.path.abspath(os.path.join(prefix, conf or DEFAULT_CONF))
    try:
        config = load(path, prefix, directives)
    except (ConfigErrors, ConfigError) as exc:
        errors = exc.errors if isinstance(exc, ConfigErrors) else [exc]
        for error in errors:
            _err(f"[emerg] {error}")
        if test or dump:
            _err(f"configuration file {path} test failed")
        sys.exit(1)

    from fastgw.observe.files import check_files

    if not signal_name:
        # nginx opens the log files at -t and at start: an unwritable one is an
        # [emerg] with its path, not a traceback from a worker later.
        try:
            check_files(config)
        except OSError as exc:
            _err(f"[emerg] {exc.strerror}")
            if test or dump:
                _err(f"configuration file {path} test failed")
            sys.exit(1)

    if test or dump:
        if not quiet or dump:
            _err(f"the configuration file {path} syntax is ok")
            _err(f"configuration file {path} test is successful")
        if dump:
            for name in config.files:
                click.echo(f"# configuration file {name}:")
                with open(name, encoding="utf-8", errors="replace") as fh:
                    text = fh.read()
                click.echo(text if text.endswith("\n") else text + "\n")
            if directives:
                click.echo("# command line directives:")
                click.echo(directives)
        sys.exit(0)

    from fastgw.master import Master, MasterError, send_signal

    if signal_name:
        try:
            send_signal(config.pid, signal_name)
        except MasterError as exc:
            _err(f"[error] {exc}")
            sys.exit(1)
        sys.exit(0)

    def reload_config():
        # HUP: the same file, prefix and -g directives; errors keep the running one.
        config = load(path, prefix, directives)
        check_files(config)
        return config

    from fastgw._core import check_compiled

    try:
        check_compiled()
        import fastgw.worker  # noqa: F401 - fail here, not in each forked worker
    except ImportError as exc:
        _err(f"[emerg] {exc}")
        sys.exit(1)
    try:
        code = Master(config, ["fastgw"] + sys.argv[1:], reload_config).run()
    except MasterError as exc:
        _err(f"[emerg] {exc}")
        sys.exit(1)
    sys.exit(code)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "conf", metavar="FILE", default=None,
              help=f"configuration file to find the metrics page in (default: {DEFAULT_CONF})")
@click.option("-p", "prefix", metavar="PREFIX", default=None,
              help="prefix for relative paths (default: the current directory)")
@click.option("--url", metavar="URL", default=None,
              help="the metrics page, e.g. http://127.0.0.1:8080/metrics (default: the first "
                   "location with `metrics` in the configuration)")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="seconds between two refreshes (and between the two scrapes of --once)")
@click.option("--once", is_flag=True, help="print the view once, as plain text, and exit")
def top(conf, prefix, url, interval, once):
    """Live view of a running fastgw: requests/s, status mix, p50/p99, upstream queues and
    peers, rejections by reason, workers."""
    from fastgw.observe.top import metrics_url, run

    host = None
    if url is None:
        from fastgw.config.errors import ConfigError, ConfigErrors
        from fastgw.config.loader import load

        prefix = os.path.abspath(prefix or os.getcwd())
        path = os.path.abspath(os.path.join(prefix, conf or DEFAULT_CONF))
        try:
            found = metrics_url(load(path, prefix))
        except (ConfigErrors, ConfigError) as exc:
            errors = exc.errors if isinstance(exc, ConfigErrors) else [exc]
            for error in errors:
                _err(f"[emerg] {error}")
            sys.exit(1)
        if found is None:
            _err(f"[error] no location with `metrics` in {path}: add one, or give --url")
            sys.exit(1)
        url, host = found
    try:
        sys.exit(run(url, interval, once, host=host))
    except OSError as exc:
        _err(f"[error] cannot read {url}: {getattr(exc, 'reason', exc)}")
        sys.exit(1)
    except (ValueError, http.client.HTTPException) as exc:
        _err(f"[error] cannot use {url}: {exc}")
        sys.exit(1)


def main(argv=None):
    """The `fastgw` command: `fastgw top ...` for the live view, else nginx's command line."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["top"]:
        return top(args=args[1:], prog_name="fastgw top")
    return serve(args=args, prog_name="fastgw")


if __name__ == "__main__":
    main()
