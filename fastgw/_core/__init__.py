"""The hot path, compiled from Cython: parsing, forwarding, pool, balancer, routing.

There is no pure-Python fallback: importing this package checks that every
extension is compiled and raises ImportError naming the missing ones, so a
broken install fails at start rather than running slowly.
"""

import importlib

MODULES = ("http", "counters", "limits", "balancer", "router", "queue", "pool", "spool", "proxy")


def check_compiled():
    """Return ``{module: path}`` for every compiled extension; ImportError naming any missing."""
    found, missing = {}, []
    for name in MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
            continue
        path = getattr(mod, "__file__", "") or ""
        if not path.endswith((".so", ".pyd")):
            missing.append(f"{name} (not compiled: {path})")
        else:
            found[name] = path
    if missing:
        raise ImportError(
            "fastgw's compiled hot path is missing: " + ", ".join(missing)
            + "; reinstall with `pip install .` (needs a C compiler and Cython)"
        )
    return found
