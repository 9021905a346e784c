"""The directive reference, rendered as Markdown from the directive table.

``python -m fastgw.config.docs > docs/directives.md`` regenerates the
committed reference; ``tests/unit/test_docs.py`` checks that the committed
file is what :func:`render` gives, so the documentation cannot drift from
:data:`fastgw.config.directives.DIRECTIVES`.
"""

from . import directives as D

# Sections in the order a configuration nests them.
CONTEXTS = (D.MAIN, D.EVENTS, D.HTTP, D.SERVER, D.LOCATION, D.UPSTREAM)

_TITLES = {
    D.MAIN: "main",
    D.EVENTS: "events",
    D.HTTP: "http",
    D.SERVER: "server",
    D.LOCATION: "location",
    D.UPSTREAM: "upstream",
}


def name_of(d):
    """The name as written in a file (``keepalive_timeout@upstream`` -> ``keepalive_timeout``)."""
    return d.name.partition("@")[0]


def syntax(d):
    """A syntax hint from the arity: ``name ARG [ARG] [ARG ...];`` or ``name ... { ... }``."""
    lo, hi = d.nargs
    parts = [name_of(d)] + ["ARG"] * lo
    if hi is None:
        parts.append("[ARG ...]")
    else:
        parts += ["[ARG]"] * (hi - lo)
    text = " ".join(parts)
    return text + (" { ... }" if d.block else ";")


def contexts_of(d):
    """The directive's contexts in nesting order, comma-separated."""
    return ", ".join(c for c in CONTEXTS if c in d.contexts)


def home(d):
    """The outermost context a directive may stand in: the section that lists it."""
    return next(c for c in CONTEXTS if c in d.contexts)


def _cell(text):
    """Text fit for one Markdown table cell: ``|`` would end the cell (GFM's ``\\|`` keeps it,
    also inside code spans), a newline would end the row."""
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text):
    return f"`{_cell(text)}`"


def render():
    """The directive reference as Markdown (no trailing newline)."""
    implemented = [d for d in D.DIRECTIVES if not d.planned]
    planned = [d for d in D.DIRECTIVES if d.planned]
    out = [
        "# fastgw directive reference",
        "",
        "Generated from `fastgw/config/directives.py` by `python -m fastgw.config.docs`; "
        "do not edit by hand.",
        "",
        "Times are written with nginx's suffixes (`ms s m h d`, bare numbers are seconds), "
        "sizes with `k m g` (bare numbers are bytes). Each directive is listed once, under the "
        "outermost context it may stand in; *contexts* lists every context that accepts it. "
        "Directives allowed in http, server and location set inherited defaults for the levels "
        "below.",
    ]
    for context in CONTEXTS:
        rows = [d for d in implemented if home(d) == context]
        if not rows:
            continue
        out += [
            "",
            f"## {_TITLES[context]}",
            "",
            "| directive | syntax | default | contexts | description |",
            "| --- | --- | --- | --- | --- |",
        ]
        for d in rows:
            default = _code(d.default) if d.default is not None else "—"
            out.append(f"| `{name_of(d)}` | {_code(syntax(d))} | {default} | "
                       f"{contexts_of(d)} | {_cell(d.doc)} |")
    if planned:
        out += [
            "",
            "## Planned (not supported yet)",
            "",
            "These directives are rejected with \"not supported yet\" until the issue named "
            "brings them.",
            "",
            "| directive | contexts | issue | description |",
            "| --- | --- | --- | --- |",
        ]
        for d in planned:
            out.append(f"| `{name_of(d)}` | {contexts_of(d)} | {_cell(d.planned)} | "
                       f"{_cell(d.doc)} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(render())
