"""nginx value syntax: fastgw.config.units."""

import pytest

from fastgw.config.units import parse_address, parse_flag, parse_int, parse_size, parse_time

# Texts that are not a plain decimal number in any nginx value.
NOT_DECIMAL = ["+10", "1_0", "0x10", "-1", "", "1 0", " ", "1.5", "ten"]


# -- sizes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("0", 0),
    ("512", 512),
    ("8k", 8 * 1024),
    ("8K", 8 * 1024),
    ("1m", 1024 * 1024),
    ("64M", 64 * 1024 * 1024),
    ("2g", 2 * 1024**3),
    ("2G", 2 * 1024**3),
    ("007", 7),
])
def test_parse_size(text, expected):
    value = parse_size(text)
    assert value == expected
    assert type(value) is int


@pytest.mark.parametrize("text", NOT_DECIMAL + ["1q", "k", "1kb", "1.5k", "1 k", "k1", "1t", "1kk"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


# -- times ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("0", 0.0),
    ("60", 60.0),
    ("5s", 5.0),
    ("500ms", 0.5),
    ("1m", 60.0),
    ("1m30s", 90.0),
    ("1h 30m", 5400.0),
    ("2h", 7200.0),
    ("1d", 86400.0),
    ("1w", 7 * 86400.0),
    ("1M", 30 * 86400.0),
    ("1y", 365 * 86400.0),
    ("1s 500ms", 1.5),
])
def test_parse_time(text, expected):
    value = parse_time(text)
    assert value == pytest.approx(expected)
    assert type(value) is float


@pytest.mark.parametrize("text", NOT_DECIMAL + ["5x", "s", "ms", "1.5s", "1ss", "1s1s", "5 x", "1S"])
def test_parse_time_rejects(text):
    with pytest.raises(ValueError, match="invalid time"):
        parse_time(text)


def test_parse_time_rejects_units_out_of_order():
    with pytest.raises(ValueError):
        parse_time("30s 1m")


# -- flags --------------------------------------------------------------------------------------
def test_parse_flag():
    assert parse_flag("on") is True
    assert parse_flag("off") is False


@pytest.mark.parametrize("text", ["", "yes", "no", "1", "0", "true", "onn", " on", "of"])
def test_parse_flag_rejects(text):
    with pytest.raises(ValueError, match='it must be "on" or "off"'):
        parse_flag(text)


def test_parse_flag_is_case_insensitive_as_in_nginx():
    assert parse_flag("ON") is True
    assert parse_flag("Off") is False


# -- integers ---------------------------------------------------------------------------------
def test_parse_int():
    assert parse_int("0") == 0
    assert parse_int("42") == 42
    assert parse_int("0042") == 42
    assert parse_int("5", minimum=5) == 5


@pytest.mark.parametrize("text", NOT_DECIMAL + ["1e3", "²"])
def test_parse_int_rejects(text):
    with pytest.raises(ValueError, match="invalid number"):
        parse_int(text)


def test_parse_int_minimum():
    with pytest.raises(ValueError, match="must be at least 1"):
        parse_int("0", minimum=1)


# -- addresses --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("8080", ("0.0.0.0", 8080)),
    ("1", ("0.0.0.0", 1)),
    ("65535", ("0.0.0.0", 65535)),
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("*:8080", ("0.0.0.0", 8080)),
    ("[::1]:8080", ("::1", 8080)),
    ("[::]:80", ("::", 80)),
    ("localhost:9001", ("localhost", 9001)),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


def test_parse_address_default_host():
    assert parse_address("8080", default_host="::") == ("::", 8080)
    assert parse_address("*:8080", default_host="::") == ("::", 8080)
    assert parse_address("10.0.0.1:8080", default_host="::") == ("10.0.0.1", 8080)


@pytest.mark.parametrize("text", NOT_DECIMAL + [
    "0", "65536", "99999", ":8080", "host:", "host:abc", "host:+80", "host:-1", "host:0x50",
    "[::1]", "[::1", "[::1]8080", "[::1]:", "abc",
])
def test_parse_address_rejects(text):
    with pytest.raises(ValueError):
        parse_address(text)


# -- only ASCII digits, as nginx's ngx_atoi ----------------------------------------------------
@pytest.mark.parametrize("parse", [parse_size, parse_time], ids=["size", "time"])
def test_non_ascii_digits_rejected(parse):
    with pytest.raises(ValueError):
        parse("١٠")


def test_parse_address_non_ascii_port_rejected():
    with pytest.raises(ValueError):
        parse_address("٨٠")
