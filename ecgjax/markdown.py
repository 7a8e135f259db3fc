"""The one Markdown table writer: evaluation report, sweep status, benchmark write-ups."""
from __future__ import annotations

from typing import Callable, Iterable, Sequence


def table(header: Sequence, rows: Iterable[Sequence], fmt: Callable[[object], str] = str) -> str:
    """A GitHub Markdown table: the header, a '|---|' rule, one line per row (cells through `fmt`)."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
