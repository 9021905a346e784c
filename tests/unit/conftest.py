"""Fixtures of the unit tests."""

import pytest

from fastgw.config import directives as D


@pytest.fixture
def planned_directive(monkeypatch):
    """A directive declared as planned (none is, today): `proxy_cache`, for issue #99.

    The configuration must reject it naming the issue, and the reference must list it
    apart; the fixture adds it to the directive table for one test.
    """
    d = D._planned("proxy_cache", {D.HTTP, D.SERVER, D.LOCATION}, (1, 1), "#99",
                   "Cache responses.")
    monkeypatch.setattr(D, "DIRECTIVES", D.DIRECTIVES + [d])
    monkeypatch.setitem(D.BY_NAME, "proxy_cache", [d])
    return d
