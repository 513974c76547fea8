"""Tables as the reader sees them: numbers rounded to their uncertainty and right-aligned, in HTML that
report.js makes sortable (click a header) and filterable (by model, task and experiment).

A DataFrame cell is either a plain value (formatted here) or a `Cell` (text already chosen, with the
value to sort on). A column whose name starts with "_" is not shown: "_model", "_task" and
"_experiment" become the row's filter attributes, "_detail" an expandable row of HTML below it, "_row"
a CSS class of the row."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

FILTERS = ("model", "task", "experiment")
MISSING = "–"


@dataclass(frozen=True)
class Cell:
    """What a cell shows (`text`, escaped unless `safe`), what it sorts on, and its CSS classes."""

    text: str
    sort: float | str | None = None
    cls: str = ""
    safe: bool = False
    title: str = ""  # shown on hover


def finite(x) -> bool:
    numeric = isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
    return numeric and math.isfinite(x)


def decimals(u: float, digits: int = 2) -> int:
    """Decimal places that show `digits` significant digits of u (negative: round left of the point)."""
    return digits - 1 - math.floor(math.log10(abs(u)))


def fixed(x: float, places: int) -> str:
    """x rounded to `places` decimals (negative rounds left of the point), thousands separated."""
    return f"{x:,.{places}f}" if places >= 0 else f"{round(x, places):,.0f}"


def number(x, digits: int = 3) -> str:
    """A value without a stated uncertainty: `digits` significant digits, thousands separated."""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if not finite(x):
        return MISSING if _missing(x) else str(x)
    if isinstance(x, (int, np.integer)) or (float(x).is_integer() and abs(x) < 10**digits):
        return f"{int(x):,}"  # counts; a large float (FLOPs, tokens/s) keeps `digits` significant digits
    return sig(x, digits)


def sig(x: float, digits: int) -> str:
    """x to `digits` significant digits, thousands separated (scientific beyond 1e12 and below 1e-4)."""
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if mag >= 12 or mag < -4:
        return f"{x:.{digits - 1}e}"
    return fixed(x, digits - 1 - mag)


def pm(mean, std, digits: int = 2) -> Cell:
    """mean ± std, both rounded to the std's first `digits` significant digits; sorts on the mean."""
    if not finite(mean):
        return Cell(MISSING, None)
    if not finite(std) or std == 0:
        return Cell(number(mean, 3), float(mean))
    places = decimals(std, digits)
    return Cell(f"{fixed(mean, places)} ± {fixed(std, places)}", float(mean))


def interval(diff, low, high, *, ratio: bool) -> Cell:
    """A difference with its 95% CI, rounded to the CI's half-width; or a ratio with its CI (an interval
    on the log scale), each to 2 significant digits (3 when the CI is within ±5%)."""
    if not (finite(diff) and finite(low) and finite(high)):
        return Cell(MISSING, None)
    if ratio:
        digits = 3 if low > 0 and high / low < 1.1 else 2
        return Cell(f"×{sig(diff, digits)} ({sig(low, digits)} to {sig(high, digits)})", float(diff))
    half = (high - low) / 2
    places = max(decimals(half), 0) if half > 0 else 3
    sign = "+" if diff > 0 else ""
    return Cell(f"{sign}{fixed(diff, places)} ({fixed(low, places)} to {fixed(high, places)})", float(diff))


def p_value(p) -> Cell:
    if not finite(p):
        return Cell(MISSING, None)
    return Cell("< 0.001" if p < 0.001 else f"{p:.2g}", float(p))


def chip(text: str, kind: str) -> Cell:
    """A verdict in words, coloured by its kind (report.css: .v-<kind>)."""
    return Cell(f'<span class="v v-{kind}">{html.escape(text)}</span>', text, safe=True)


def _missing(v) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, (float, np.floating)) and math.isnan(v))


def _cell(v) -> Cell:
    if isinstance(v, Cell):
        return v
    if _missing(v):
        return Cell(MISSING)
    if isinstance(v, (list, tuple)):
        v = ", ".join(map(str, v))
    if finite(v):
        return Cell(number(v), float(v))
    return Cell(number(v), number(v))


def _is_numeric(cells: list[Cell]) -> bool:
    sorts = [c.sort for c in cells if c.sort is not None]
    return bool(sorts) and all(isinstance(s, float) for s in sorts)


def _attr(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return "" if _missing(value) else str(value)


def _classes(*names: str) -> str:
    return " ".join(n for n in names if n)


EXPAND = '<button type="button" class="expand" aria-expanded="false" title="details">▸</button>'


def _td(cell: Cell, classes: str, prefix: str) -> str:
    sort = "" if cell.sort is None else f' data-v="{html.escape(str(cell.sort))}"'
    return (
        f'<td class="{classes}"{sort}{_title(cell.title)}>{prefix}'
        f"{cell.text if cell.safe else html.escape(cell.text)}</td>"
    )


def _row(values: dict, cells: list[Cell], kinds: list[str]) -> str:
    """One <tr> (filter attributes, row class) and, when the row has details, its hidden detail row."""
    attrs = "".join(
        f' data-{k}="{html.escape(_attr(values["_" + k]))}"' for k in FILTERS if "_" + k in values
    )
    if isinstance(values.get("_row"), str) and values["_row"]:
        attrs += f' class="{html.escape(values["_row"])}"'
    detail = None if _missing(values.get("_detail")) else values.get("_detail")
    tds = "".join(
        _td(cell, _classes(kind, cell.cls), EXPAND if detail and j == 0 else "")
        for j, (kind, cell) in enumerate(zip(kinds, cells))
    )
    extra = f'<tr class="detail" hidden><td colspan="{len(cells)}">{detail}</td></tr>' if detail else ""
    return f"<tr{attrs}>{tds}</tr>{extra}"


def html_table(
    df: pd.DataFrame,
    *,
    table_id: str,
    caption: str = "",
    csv: str | None = None,
    wrap: tuple[str, ...] = (),
    titles: dict[str, str] | None = None,
) -> str:
    """The sortable, filterable table; `wrap` columns hold prose and wrap, the others stay on one line;
    `titles` explain column headers on hover."""
    if df is None or df.empty:
        return ""
    shown = [c for c in df.columns if not str(c).startswith("_")]
    cells = {c: [_cell(v) for v in df[c]] for c in shown}
    numeric = {c: _is_numeric(cells[c]) for c in shown}
    kinds = {c: _classes("num" if numeric[c] else "txt", "wrap" if c in wrap else "") for c in shown}
    head = "".join(
        f'<th scope="col" class="{kinds[c]}"{_title((titles or {}).get(c))}>'
        f'<button type="button">{html.escape(str(c))}</button></th>'
        for c in shown
    )
    body = "".join(
        _row(dict(zip(df.columns, row)), [cells[c][i] for c in shown], [kinds[c] for c in shown])
        for i, row in enumerate(df.itertuples(index=False))
    )
    links = f' · <a href="{html.escape(csv)}" download>CSV</a>' if csv else ""
    cap = f'<p class="cap">{html.escape(caption)}{links} <span class="count"></span></p>' if caption else ""
    return (
        f'<div class="tbl" id="{html.escape(table_id)}">{cap}<div class="scroll"><table class="sortable">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
        '<p class="empty" hidden>No row matches the filters.</p></div>'
    )


def _title(text: str | None) -> str:
    return f' title="{html.escape(text)}"' if text else ""
