"""Markdown tables: the one writer behind every table the package prints (benchmark records, ablations,
the paper's tables, the course's).

    print(markdown_table(records, {"category": "category", "image_auroc": "image AUROC"}))
    print(table_header(["category", "d"])); print(table_row(["bottle", 100]))   # a table line by line

A cell shows a float with `fmt` (default 3 decimals), None or NaN as `missing` ("–" unless told), anything
else as `str`; a "|" inside a cell is escaped so it cannot split the row.

>>> print(markdown_table([{"category": "bottle", "image_auroc": 0.98765, "d": 100},
...                       {"category": "cable", "image_auroc": None, "d": 100}]))
| category | image_auroc | d |
|---|---|---|
| bottle | 0.988 | 100 |
| cable | – | 100 |
>>> format_cell(float("nan")), format_cell(12.345, ".1f"), format_cell(None, missing="n/a")
('–', '12.3', 'n/a')
"""

from __future__ import annotations

import math

__all__ = ["MISSING", "format_cell", "table_header", "table_row", "markdown_table"]

#: What a cell shows where there is no number.
MISSING = "–"


def format_cell(value, fmt: str = ".3f", missing: str = MISSING) -> str:
    """One cell's text: None or NaN -> `missing`; a float -> `format(value, fmt)`; anything else `str(value)`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, fmt) if isinstance(value, float) else str(value)


def table_header(headers) -> str:
    """The header line and the line under it: "| a | b |" and "|---|---|"."""
    headers = list(headers)
    return "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers)


def table_row(cells) -> str:
    """One row of cells, already text (or anything `str` can show), "|" escaped: "| a | b |"."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def markdown_table(rows, columns=None, formats: dict[str, str] | None = None, missing: str = MISSING) -> str:
    """A list of dicts (one row each) or a dict (two columns: key, value) as a markdown table.

    `columns`: the keys to show, in order (default: the first row's), or {key: header} to name them;
    `formats`: a format spec per key for its floats (default ".3f"). A row without a key shows an empty cell.
    """
    if isinstance(rows, dict):
        rows, columns = [{"": k, " ": v} for k, v in rows.items()], columns or ["", " "]
    columns = columns or list(rows[0])
    headers = dict(columns) if isinstance(columns, dict) else {c: c for c in columns}
    formats = formats or {}
    lines = [table_header(headers.values())]
    lines += [table_row(format_cell(r[c], formats.get(c, ".3f"), missing) if c in r else "" for c in headers)
              for r in rows]
    return "\n".join(lines)
