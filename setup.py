"""Build the Cython hot path in fastgw/_core.

The extensions are always compiled from the .pyx sources: fastgw has no
pure-Python fallback for the hot path (a missing extension is an error at
start, see fastgw._core.__init__).

Environment knobs (uvloop's setup.py offers the same as options):
  FASTGW_CYTHON_ANNOTATE=1   write cython -a HTML next to each .pyx
  FASTGW_CYTHON_DIRECTIVES="boundscheck=False,profile=True"  extra directives
  FASTGW_DEBUG=1             -O0 -g, and Cython's linetrace for coverage
"""
import os

from setuptools import Extension, setup

CORE_MODULES = ["http", "counters", "limits", "balancer", "router", "queue", "pool", "spool", "proxy"]

# llhttp, vendored unmodified (fastgw/_core/vendor/llhttp/README.md), is compiled into
# the proxy extension, which drives its C API directly (fastgw/_core/llhttp.pxd).
LLHTTP = "fastgw/_core/vendor/llhttp"
EXTRA = {
    "proxy": dict(
        sources=[f"{LLHTTP}/src/api.c", f"{LLHTTP}/src/http.c", f"{LLHTTP}/src/llhttp.c"],
        include_dirs=[f"{LLHTTP}/include"],
    ),
}


def _directives():
    directives = {
        "language_level": "3",
        # Bounds checks and negative indices stay on: the hot path indexes little,
        # and a gateway must never read out of bounds on hostile input.
        "cdivision": True,
        "embedsignature": True,
    }
    extra = os.environ.get("FASTGW_CYTHON_DIRECTIVES", "")
    for item in filter(None, (s.strip() for s in extra.split(","))):
        key, _, value = item.partition("=")
        directives[key] = {"True": True, "False": False}.get(value, value)
    return directives


def _extensions():
    from Cython.Build import cythonize

    debug = os.environ.get("FASTGW_DEBUG") == "1"
    cflags = ["-O0", "-g"] if debug else ["-O2"]
    exts = [
        Extension(
            f"fastgw._core.{name}",
            [f"fastgw/_core/{name}.pyx"] + EXTRA.get(name, {}).get("sources", []),
            include_dirs=EXTRA.get(name, {}).get("include_dirs", []),
            extra_compile_args=cflags,
        )
        for name in CORE_MODULES
    ]
    return cythonize(
        exts,
        compiler_directives=_directives(),
        annotate=os.environ.get("FASTGW_CYTHON_ANNOTATE") == "1",
    )


setup(ext_modules=_extensions())
