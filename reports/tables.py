"""Tables that lose no column: one model for every table of the report, rendered whole on screen
(inside a horizontally scrolling box) and, where it is too wide for a printed A4 page, also as
consecutive parts for print, each part repeating the key columns (e.g. attack and eps) and
holding the next columns that fit.

The print width is estimated from the text: a column needs its header (headers never wrap, so
the PDF's text holds every header whole) and its longest cell up to :data:`WRAP_AT` characters
(longer cells wrap). :data:`PRINT_WIDTH` is the number of such characters a portrait A4 page
holds at the print font size; parts are packed greedily in column order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: characters of table text a printed A4 page (186 mm at 9 px DejaVu Sans) holds in one row
PRINT_WIDTH = 128
#: cells longer than this wrap in print; the column is sized for this many characters
WRAP_AT = 26
#: per-column padding and borders, in characters
PAD = 2


@dataclass
class Cell:
    """One cell: its text (escaped by the template), and optionally a link, a CSS class, a
    small tag shown after the text (e.g. "sanity probe") and whether it is a number."""

    text: str
    href: str | None = None
    css: str = ""
    tag: str = ""
    num: bool = False


@dataclass
class Table:
    """A table as the template renders it.

    ``columns``: header texts; ``rows``: lists of :class:`Cell` (plain strings are turned into
    cells); ``num``: the column indices that hold numbers (right-aligned); ``key``: how many
    leading columns every printed part repeats; ``title``: a heading row above the header
    (inside the table, so it repeats with the header on a new page); ``css``/``id``: the
    table's class and id; ``row_css``: a CSS class per row (e.g. the worst-case row)."""

    columns: list[str]
    rows: list[list[Cell]]
    css: str = ""
    id: str | None = None
    title: str = ""
    title_note: str = ""
    key: int = 1
    num: set[int] = field(default_factory=set)
    row_css: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rows = [[c if isinstance(c, Cell) else Cell(str(c)) for c in r] for r in self.rows]
        self.key = max(0, min(self.key, len(self.columns)))
        if len(self.row_css) < len(self.rows):
            self.row_css = [*self.row_css, *[""] * (len(self.rows) - len(self.row_css))]

    def is_num(self, j: int) -> bool:
        return j in self.num

    def widths(self) -> list[int]:
        """Estimated print width of each column, in characters."""
        out = []
        for j, head in enumerate(self.columns):
            longest = max(
                (len(r[j].text) + len(r[j].tag) for r in self.rows if j < len(r)), default=0
            )
            out.append(max(len(head), min(longest, WRAP_AT)) + PAD)
        return out

    @property
    def parts(self) -> list[list[int]]:
        """Column indices of each printed part (key columns first in each); one part when the
        whole table fits the page. The fewest parts that fit, then balanced: each part is
        filled up to an equal share of the non-key width, so the last part is not a stub."""
        widths = self.widths()
        keys = list(range(self.key))
        if sum(widths) <= PRINT_WIDTH or len(self.columns) <= self.key + 1:
            return [list(range(len(self.columns)))]
        base = sum(widths[j] for j in keys)
        rest = list(range(self.key, len(self.columns)))

        def pack(limit: float) -> list[list[int]]:
            parts: list[list[int]] = []
            current: list[int] = []
            used = base
            for j in rest:
                if current and used + widths[j] > limit:
                    parts.append(current)
                    current, used = [], base
                current.append(j)
                used += widths[j]
            return [*parts, current] if current else parts

        fewest = len(pack(PRINT_WIDTH))
        share = base + sum(widths[j] for j in rest) / fewest
        balanced = pack(min(PRINT_WIDTH, share + max(widths[j] for j in rest) / 2))
        chosen = balanced if len(balanced) == fewest else pack(PRINT_WIDTH)
        return [keys + part for part in chosen]

    @property
    def part_css(self) -> str:
        """The class of each printed part: every class of the table with ``-part`` appended
        (so a lookup of the whole table by class never finds its parts), plus ``table-part``."""
        return " ".join([*(f"{c}-part" for c in self.css.split()), "table-part"])

    @property
    def split(self) -> bool:
        """Whether print shows the table in several parts."""
        return len(self.parts) > 1


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    css: str = "",
    num: Sequence[int] | None = None,
    **kw: Any,
) -> Table:
    """Shorthand for :class:`Table`; ``num`` defaults to the columns whose cells all look like
    numbers (digits, signs, dots, commas, ``%``, ``—``, intervals in brackets)."""
    cells = [[c if isinstance(c, Cell) else Cell(str(c)) for c in r] for r in rows]
    if num is None:
        num = [
            j
            for j in range(len(columns))
            if cells and all(j < len(r) and _numeric(r[j].text) for r in cells)
        ]
    return Table(list(columns), cells, css=css, num=set(num), **kw)


def _numeric(text: str) -> bool:
    stripped = text.replace("—", "").replace(" s", "").strip()
    return bool(stripped) and all(ch in "0123456789.,+-e%[]() " for ch in stripped.lower())


def transposed(t: Table, max_rows: int = 8) -> Table | None:
    """``t`` rotated (its rows become columns, headed by the first column's values) when it is
    too wide for a printed page and short (at most ``max_rows`` rows), so it prints as one
    narrow table instead of many parts; None when rotating does not help."""
    if not t.split or not t.rows or len(t.rows) > max_rows:
        return None
    heads = [t.columns[0], *(r[0].text if r else "" for r in t.rows)]
    rows = [
        [Cell(t.columns[j]), *(r[j] if j < len(r) else Cell("") for r in t.rows)]
        for j in range(1, len(t.columns))
    ]
    numeric = (
        set(range(1, len(heads))) if all(t.is_num(j) for j in range(1, len(t.columns))) else set()
    )
    out = Table(
        heads, rows, css=t.css, id=t.id, title=t.title, title_note=t.title_note, key=1, num=numeric
    )
    return None if out.split else out
