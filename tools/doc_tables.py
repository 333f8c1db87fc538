"""Writes one benchmark's section into a Markdown file without touching the other sections.

Each benchmark owns a block between `<!-- BEGIN name -->` and `<!-- END name -->`; running it again
replaces only that block, so several tools can share docs/benchmarks.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(path: str | Path, name: str, body: str, title: str = "# Benchmarks\n") -> None:
    path = Path(path)
    text = path.read_text() if path.exists() else title
    block = f"<!-- BEGIN {name} -->\n{body.strip()}\n<!-- END {name} -->"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
