"""fastgw: an HTTP/1.1 reverse proxy and API gateway in the style of nginx.

The cold path (configuration, the master, workers' set-up, logs) is plain
Python; the hot path (parsing, forwarding, the upstream pool, the balancer)
is compiled from Cython in :mod:`fastgw._core`.
"""

__version__ = "0.1.0"
NAME = "fastgw"
