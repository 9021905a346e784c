"""Request routing: fastgw._core.router (location match, URI and Host normalisation, server_name)."""

import pytest

from fastgw._core.router import Router, VirtualHosts, normalize_host, normalize_path

# The example of nginx's documentation of `location`
# (https://nginx.org/en/docs/http/ngx_http_core_module.html#location), in file order.
NGINX_EXAMPLE = [
    ("=", "/", "A"),
    ("", "/", "B"),
    ("", "/documents/", "C"),
    ("^~", "/images/", "D"),
    ("~*", r"\.(gif|jpg|jpeg)$", "E"),
]


@pytest.mark.parametrize("path, expected", [
    (b"/", "A"),
    (b"/index.html", "B"),
    (b"/documents/document.html", "C"),
    (b"/images/1.gif", "D"),
    (b"/documents/1.jpg", "E"),
])
def test_nginx_documentation_example(path, expected):
    assert Router(NGINX_EXAMPLE).match(path) == expected


def test_exact_match_wins_over_everything():
    router = Router([
        ("^~", "/images/", "prefix-stop"),
        ("~", r"\.gif$", "regex"),
        ("=", "/images/a.gif", "exact"),
    ])
    assert router.match(b"/images/a.gif") == "exact"
    assert router.match(b"/images/b.gif") == "prefix-stop"


def test_exact_match_is_exact_only():
    router = Router([("=", "/a", "exact"), ("", "/", "root")])
    assert router.match(b"/a") == "exact"
    assert router.match(b"/a/") == "root"
    assert router.match(b"/ab") == "root"
    assert router.match(b"/a/b") == "root"


def test_longest_prefix_wins_whatever_the_order():
    entries = [("", "/", "root"), ("", "/api/", "api"), ("", "/api/v1/", "v1"), ("", "/a", "a")]
    for order in (entries, entries[::-1]):
        router = Router(order)
        assert router.match(b"/api/v1/users") == "v1"
        assert router.match(b"/api/v2/users") == "api"
        assert router.match(b"/api") == "a"  # "/api/" does not match "/api"
        assert router.match(b"/other") == "root"


def test_prefix_match_is_case_sensitive():
    router = Router([("", "/API/", "api"), ("", "/", "root")])
    assert router.match(b"/API/x") == "api"
    assert router.match(b"/api/x") == "root"


def test_caret_tilde_longest_prefix_stops_regex_search():
    router = Router([
        ("^~", "/static/", "static"),
        ("~", r"\.css$", "css"),
    ])
    assert router.match(b"/static/site.css") == "static"
    assert router.match(b"/other/site.css") == "css"


def test_caret_tilde_only_counts_when_it_is_the_longest_prefix():
    # The longest prefix is the plain /static/big/, so regexes are still searched.
    router = Router([
        ("^~", "/static/", "static"),
        ("", "/static/big/", "big"),
        ("~", r"\.css$", "css"),
    ])
    assert router.match(b"/static/big/site.css") == "css"
    assert router.match(b"/static/big/site.js") == "big"
    assert router.match(b"/static/site.css") == "static"


def test_regexes_in_file_order_first_match_wins():
    router = Router([
        ("", "/", "root"),
        ("~", r"^/api/", "first"),
        ("~", r"^/api/v1/", "second"),
    ])
    assert router.match(b"/api/v1/x") == "first"
    swapped = Router([
        ("", "/", "root"),
        ("~", r"^/api/v1/", "second"),
        ("~", r"^/api/", "first"),
    ])
    assert swapped.match(b"/api/v1/x") == "second"
    assert swapped.match(b"/api/v2/x") == "first"


def test_regex_beats_longer_plain_prefix():
    router = Router([("", "/api/v1/", "prefix"), ("~", r"/v1/", "regex")])
    assert router.match(b"/api/v1/x") == "regex"


def test_regex_is_a_search_not_anchored():
    router = Router([("~", r"/api", "regex")])
    assert router.match(b"/v2/api/x") == "regex"
    assert router.match(b"/v2/x") is None


def test_case_sensitive_and_insensitive_regex():
    router = Router([("~", r"\.php$", "php"), ("~*", r"\.jpg$", "jpg"), ("", "/", "root")])
    assert router.match(b"/a.php") == "php"
    assert router.match(b"/a.PHP") == "root"
    assert router.match(b"/a.jpg") == "jpg"
    assert router.match(b"/a.JPG") == "jpg"
    assert router.match(b"/a.JpG") == "jpg"


def test_falls_back_to_longest_prefix_when_no_regex_matches():
    router = Router([
        ("", "/", "root"),
        ("", "/docs/", "docs"),
        ("~", r"\.pdf$", "pdf"),
    ])
    assert router.match(b"/docs/a.html") == "docs"
    assert router.match(b"/docs/a.pdf") == "pdf"


def test_no_match_is_none():
    router = Router([("", "/api/", "api"), ("=", "/x", "x"), ("~", r"\.gif$", "gif")])
    assert router.match(b"/") is None
    assert router.match(b"/other") is None
    assert Router([]).match(b"/") is None


def test_patterns_may_be_bytes():
    router = Router([("", b"/a/", "a"), ("=", b"/b", "b"), ("~", rb"\.c$", "c")])
    assert router.match(b"/a/x") == "a"
    assert router.match(b"/b") == "b"
    assert router.match(b"/x.c") == "c"


def test_unknown_modifier_is_rejected():
    with pytest.raises(ValueError):
        Router([("@", "/x", "x")])


# -- normalize_path ---------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    (b"/", b"/"),
    (b"/index.html", b"/index.html"),
    # percent-decoding, once only
    (b"/%41%62c", b"/Abc"),
    (b"/caf%C3%A9", b"/caf\xc3\xa9"),
    (b"/%2541", b"/%41"),
    (b"/a%20b", b"/a b"),
    (b"/a+b", b"/a+b"),
    # merged slashes
    (b"//a///b", b"/a/b"),
    (b"//", b"/"),
    # dot segments
    (b"/a/./b", b"/a/b"),
    (b"/a/../b", b"/b"),
    (b"/a/b/../../c", b"/c"),
    (b"/.", b"/"),
    (b"/a/.hidden", b"/a/.hidden"),
    (b"/a/..b", b"/a/..b"),
    # decoded "/" and "." take part in merging and dot segments, as in nginx
    (b"/a%2F..%2Fb", b"/b"),
    (b"/a/%2e%2e/b", b"/b"),
    # trailing slash kept
    (b"/a/", b"/a/"),
    (b"/a//", b"/a/"),
    (b"/a/.", b"/a/"),
    (b"/a/b/..", b"/a/"),
    (b"/a/b/../", b"/a/"),
    (b"/a/..", b"/"),
])
def test_normalize_path(raw, expected):
    assert normalize_path(raw) == expected


@pytest.mark.parametrize("raw", [
    b"/..", b"/../a", b"/a/../..", b"/%2e%2e", b"/a/%2E%2E/..",  # above the root
    b"/%00", b"/a%00b",                                         # decoded NUL
    b"/%zz", b"/%4", b"/a%4", b"/%", b"/%g0", b"/%0g",          # bad escapes
    b"", b"a", b"a/b", b"*", b"%2F",                            # not starting with "/"
])
def test_normalize_path_rejects(raw):
    assert normalize_path(raw) is None


# -- normalize_host ---------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    (b"example.com", b"example.com"),
    (b"Example.COM", b"example.com"),
    (b"example.com:8080", b"example.com"),
    (b"example.com:", b"example.com"),
    (b"example.com.", b"example.com"),
    (b"Example.com.:80", b"example.com"),
    (b"[::1]:80", b"[::1]"),
    (b"[::1]", b"[::1]"),
    (b"[FE80::1]:8080", b"[fe80::1]"),
    (b"127.0.0.1:80", b"127.0.0.1"),
])
def test_normalize_host(raw, expected):
    assert normalize_host(raw) == expected


@pytest.mark.parametrize("raw", [
    b".", b":80", b".:80", b"a..b", b"a b", b"a\tb", b"a/b", b"a\x00b", b"a\x7fb",
    b"[::1", b"example.com:8o",
])
def test_normalize_host_rejects(raw):
    assert normalize_host(raw) is None


def test_normalize_host_rejects_empty():
    assert normalize_host(b"") is None


# -- VirtualHosts -----------------------------------------------------------------------------
SERVERS = [
    (("example.com", "www.example.com"), "exact"),
    (("*.example.com",), "front"),
    (("*.api.example.com",), "front-longer"),
    (("www.example.*",), "back"),
    (("www.example.co.*",), "back-longer"),
    ((".example.org",), "dot"),
    ((r"~^app(\d+)\.example\.net$",), "regex1"),
    ((r"~\.example\.net$",), "regex2"),
    (("Other.COM",), "other"),
]


@pytest.mark.parametrize("host, expected", [
    (b"example.com", "exact"),
    (b"www.example.com", "exact"),          # exact beats *.example.com and www.example.*
    (b"foo.example.com", "front"),
    (b"a.b.example.com", "front"),          # "*." matches several labels
    (b"x.api.example.com", "front-longer"),  # the longest front wildcard
    (b"www.example.net", "back"),           # front wildcards do not apply, back does
    (b"www.example.co.uk", "back-longer"),  # the longest back wildcard
    (b"example.org", "dot"),                # .example.org = example.org ...
    (b"x.example.org", "dot"),              # ... and *.example.org
    (b"app12.example.net", "regex1"),       # regexes in file order
    (b"db.example.net", "regex2"),
    (b"other.com", "other"),                # names are compared in lower case
])
def test_virtual_hosts(host, expected):
    assert VirtualHosts(SERVERS).find(host) == expected


def test_wildcard_does_not_match_the_bare_domain():
    vh = VirtualHosts([(("default",), "first"), (("*.example.com",), "front")])
    assert vh.find(b"example.com") == "first"
    assert vh.find(b"badexample.com") == "first"


def test_front_wildcard_beats_back_wildcard_and_back_beats_regex():
    vh = VirtualHosts([
        (("~^www",), "regex"),
        (("www.example.*",), "back"),
        (("*.example.com",), "front"),
    ])
    assert vh.find(b"www.example.com") == "front"
    assert vh.find(b"www.example.net") == "back"
    assert vh.find(b"www.other.net") == "regex"


def test_first_server_is_the_default_without_default_server():
    vh = VirtualHosts([(("a.com",), "first"), (("b.com",), "second")])
    assert vh.default == "first"
    assert vh.find(b"unknown.com") == "first"
    assert vh.find(None) == "first"


def test_default_server_wins_over_first_server():
    vh = VirtualHosts([(("a.com",), "first"), (("b.com",), "second")], default="second")
    assert vh.find(b"unknown.com") == "second"
    assert vh.find(None) == "second"
    assert vh.find(b"a.com") == "first"


def test_first_server_with_a_name_wins_on_conflict():
    vh = VirtualHosts([(("x.com",), "first"), (("x.com",), "second")])
    assert vh.find(b"x.com") == "first"


def test_empty_server_name_matches_requests_without_host():
    vh = VirtualHosts([(("a.com",), "first"), (("",), "nohost")])
    assert vh.find(b"") == "nohost"
