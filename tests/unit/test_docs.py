"""docs/directives.md is generated from the directive table and must not drift from it."""

from pathlib import Path

from fastgw.config import docs
from fastgw.config.directives import DIRECTIVES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "directives.md"


def test_committed_reference_is_current():
    # Regenerate with: python -m fastgw.config.docs > docs/directives.md
    assert DOCS.read_text(encoding="utf-8") == docs.render() + "\n"


def _rows(text):
    return [line for line in text.splitlines() if line.startswith("| `")]


def test_every_directive_has_one_row():
    rows = _rows(docs.render())
    for d in DIRECTIVES:
        name = d.name.partition("@")[0]
        matching = [r for r in rows if r.startswith(f"| `{name}` |") and d.doc.replace("|", "\\|") in r]
        assert len(matching) == 1, d.name
        if d.planned:
            assert f"| {d.planned} |" in matching[0]
    assert len(rows) == len(DIRECTIVES)


def test_planned_directives_are_listed_separately(planned_directive):
    text = docs.render()
    head, _, planned = text.partition("## Planned (not supported yet)")
    assert planned
    for d in DIRECTIVES + [planned_directive]:
        row = f"| `{d.name.partition('@')[0]}` |"
        if d.planned:
            assert row in planned
        else:
            assert row in head


def test_sections_and_syntax_hints():
    text = docs.render()
    sections = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    # (A "Planned" section follows when a directive is planned: none is today.)
    assert sections == ["main", "events", "http", "server", "location", "upstream"]
    # The upstream meaning of keepalive_timeout is listed under its written name.
    upstream = text.partition("## upstream")[2].partition("## Planned")[0]
    assert "| `keepalive_timeout` | `keepalive_timeout ARG;` | `60s` | upstream |" in upstream
    assert "| `events` | `events { ... }` | — | main |" in text
    assert "`server_name ARG [ARG ...];`" in text
    assert "`error_log ARG [ARG];` | `logs/error.log error` | main, http, server, location |" in text
    # A "|" inside a cell is escaped so that the table keeps its columns.
    for row in _rows(text):
        cells = row.replace("\\|", "").split("|")
        assert len(cells) in (6, 7), row  # 5 or 4 columns between the outer bars
