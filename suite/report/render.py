"""Draw a figure spec (suite/report/figures.py) two ways: as plotly JSON for the interactive page (the
template embeds plotly.js once per page) and as a matplotlib PNG written beside the page."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np

from suite.report.figures import Figure, Panel, Trace

FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"
GAP = 0.07  # between panels, as a fraction of the figure's width
log = logging.getLogger("lstm_bench")


def plotly_js() -> str:
    """The plotly.js bundle shipped with the installed plotly package (no CDN: the page works offline).
    Without plotly (a bare GPU machine): "" and one warning; the page then shows each figure's PNG."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        log.warning("lstm-bench: plotly is not installed: the report's figures are PNGs (not interactive)")
        return ""
    return get_plotlyjs()


# ---- plotly ---------------------------------------------------------------------------------------------


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _plotly_traces(t: Trace, axes: dict, legend: bool) -> list[dict]:
    color = t.color or "#444444"
    base = {"name": t.name, "legendgroup": t.group or t.name, "showlegend": legend, **axes}
    if t.hover:
        base |= {"hovertext": t.hover, "hovertemplate": "%{hovertext}<extra></extra>"}
    if t.kind == "band":  # two edges; the upper one fills down to the lower
        edge = {
            **base,
            "type": "scatter",
            "mode": "lines",
            "line": {"width": 0, "color": color},
            "hoverinfo": "skip",
            "showlegend": False,
        }
        return [
            {**edge, "x": t.x, "y": t.y},
            {**edge, "x": t.x, "y": t.high, "fill": "tonexty", "fillcolor": _rgba(color, 0.15)},
        ]
    if t.kind in ("bar", "hbar"):
        out = {
            **base,
            "type": "bar",
            "x": t.x,
            "y": t.y,
            "marker": {"color": color},
            **({"orientation": "h"} if t.kind == "hbar" else {}),
        }
    else:
        mode = "lines" if t.kind in ("line", "step") else t.kind
        out = {**base, "type": "scatter", "mode": mode, "x": t.x, "y": t.y}
        if "lines" in mode:
            dash = "dash" if t.dash else "solid"
            out["line"] = {"color": color, "width": 1 if t.faint else 2, "dash": dash}
            out["line"] |= {"shape": "hv"} if t.kind == "step" else {}
            out |= {"opacity": 0.35} if t.faint else {}
        if "markers" in mode:
            out["marker"] = {"color": _rgba(color, 0.45) if t.faint else color, "size": 6 if t.faint else 9}
    if t.err is not None:
        axis = "error_x" if t.kind == "hbar" or t.err_axis == "x" else "error_y"
        out[axis] = {
            "type": "data",
            "array": t.err,
            "visible": True,
            "thickness": 1.2,
            "width": 3,
            "color": color,
        }
    return [out]


def _tick(v: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= 10 * div:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"


def log_ticks(values, *, sweep: bool = False) -> dict:
    """Ticks of a log axis, each labelled in full (plotly labels minor ticks "2", "5" without their decade):
    a sweep's own values (sequence lengths, learning rates) when there are few, else 1-2-5 steps within
    two decades, 1-3 within four, powers of ten beyond."""
    vals = np.asarray([v for v in values if v is not None and np.isfinite(v) and v > 0], dtype=float)
    if not len(vals):
        return {}
    if sweep and len(np.unique(vals)) <= 8:
        ticks = [float(f"{t:.6g}") for t in np.unique(vals)]
        return {"tickvals": ticks, "ticktext": [_tick(t) for t in ticks]}
    lo, hi = np.floor(np.log10(vals.min())), np.ceil(np.log10(vals.max()))
    steps = (1, 2, 5) if hi - lo <= 2 else (1, 3) if hi - lo <= 4 else (1,)
    ticks = [m * 10**e for e in range(int(lo), int(hi) + 1) for m in steps]
    ticks = [float(f"{t:.6g}") for t in ticks if vals.min() / 1.5 <= t <= vals.max() * 1.5] or [10**lo]
    return {"tickvals": ticks, "ticktext": [_tick(t) for t in ticks]}


def _axis(title: str, log: bool, values=(), sweep: bool = False, **extra) -> dict:
    return {
        "title": {"text": title, "font": {"size": 12}},
        "type": "log" if log else "-",
        "zeroline": False,
        "gridcolor": "#eeeeee",
        "automargin": True,
        **(log_ticks(values, sweep=sweep) if log else {}),
        **extra,
    }


def _extent(traces: list[Trace], axis: str) -> list[float]:
    """Every value a log axis must show: the data, band edges and the ends of error bars."""
    out: list[Any] = []
    for t in traces:
        data = list(t.x if axis == "x" else t.y)
        out += data + (list(t.high or []) if axis == "y" else [])
        if t.err is not None and ("x" if t.kind == "hbar" or t.err_axis == "x" else "y") == axis:
            out += [v + sign * e for v, e in zip(data, t.err) for sign in (1, -1)]
    return [float(v) for v in out if isinstance(v, (int, float, np.number))]


def to_plotly(fig: Figure) -> dict:
    """The figure as plotly's {data, layout}: panels side by side, one legend, a legend group per model."""
    n = len(fig.panels)
    width = (1 - GAP * (n - 1)) / n
    data: list[dict] = []
    layout: dict[str, Any] = {}
    titles: list[dict] = []
    seen: set[str] = set()
    for i, panel in enumerate(fig.panels):
        k = "" if i == 0 else str(i + 1)
        domain = [round(i * (width + GAP), 4), round(i * (width + GAP) + width, 4)]
        xs = _extent(panel.traces, "x") if panel.xlog else ()
        ys = _extent(panel.traces, "y") if panel.ylog else ()
        layout[f"xaxis{k}"] = _axis(panel.xlabel, panel.xlog, xs, sweep=True, domain=domain, anchor=f"y{k}")
        layout[f"yaxis{k}"] = _axis(panel.ylabel, panel.ylog, ys, anchor=f"x{k}")
        if panel.title and n > 1:
            titles.append(
                {
                    "text": f"<b>{panel.title}</b>",
                    "x": sum(domain) / 2,
                    "y": 1.0,
                    "xref": "paper",
                    "yref": "paper",
                    "yanchor": "bottom",
                    "showarrow": False,
                    "font": {"size": 12},
                }
            )
        for t in panel.traces:
            first = t.legend and (t.group or t.name) not in seen
            seen |= {t.group or t.name} if first else set()
            data += _plotly_traces(t, {"xaxis": f"x{k}", "yaxis": f"y{k}"}, first)
    layout |= {
        "height": 380,
        "margin": {"l": 60, "r": 10, "t": 30, "b": 50},
        "annotations": titles,
        "font": {"family": FONT, "size": 12, "color": "#222222"},
        "barmode": "group",
        "hovermode": "closest",
        "plot_bgcolor": "#ffffff",
        "paper_bgcolor": "#ffffff",
        "legend": {"font": {"size": 11}, "groupclick": "togglegroup"},
    }
    return {"data": data, "layout": layout}


def plotly_json(fig: Figure) -> str:
    """JSON safe inside <script type="application/json">: no "</" can close the tag."""
    return json.dumps(to_plotly(fig), separators=(",", ":"), default=_plain).replace("</", "<\\/")


def _plain(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


# ---- matplotlib -------------------------------------------------------------------------------------------


def _bars(ax, bars: list[Trace]) -> None:
    """Grouped bars on a categorical axis (vertical, or horizontal for hbar)."""
    vertical = bars[0].kind == "bar"
    cats = list(dict.fromkeys(c for t in bars for c in (t.x if vertical else t.y)))
    width = 0.8 / len(bars)
    for k, t in enumerate(bars):
        at = np.array([cats.index(c) for c in (t.x if vertical else t.y)]) + (k - (len(bars) - 1) / 2) * width
        if vertical:
            ax.bar(at, t.y, width, yerr=t.err, capsize=2, color=t.color, label=t.name if t.legend else None)
        else:
            ax.barh(at, t.x, width, xerr=t.err, capsize=2, color=t.color, label=t.name if t.legend else None)
    if vertical:
        ax.set_xticks(range(len(cats)), cats, rotation=20, ha="right", fontsize=7)
    else:
        ax.set_yticks(range(len(cats)), cats, fontsize=7)


def _draw(ax, panel: Panel) -> None:
    bars = [t for t in panel.traces if t.kind in ("bar", "hbar")]
    if bars:
        _bars(ax, bars)
    for t in panel.traces:
        style = {"color": t.color or "#444444", "label": t.name if t.legend else None}
        if t.kind == "band":
            ax.fill_between(t.x, t.y, t.high, color=t.color, alpha=0.15, lw=0)
        elif t.kind == "step":
            ax.step(t.x, t.y, where="post", **style)
        elif t.kind not in ("bar", "hbar"):
            xerr, yerr = (t.err, None) if t.err_axis == "x" else (None, t.err)
            ax.errorbar(
                t.x,
                t.y,
                xerr=xerr,
                yerr=yerr,
                marker="o" if "markers" in t.kind else None,
                ls="--" if t.dash else "-" if "line" in t.kind else "none",
                lw=0.8 if t.faint else 1.6,
                ms=3 if t.faint else 5,
                alpha=0.4 if t.faint else 1.0,
                capsize=2 if t.err else 0,
                **style,
            )
    ax.set_xlabel(panel.xlabel, fontsize=8)
    ax.set_ylabel(panel.ylabel, fontsize=8)
    ax.set_title(panel.title, fontsize=9)
    ax.tick_params(labelsize=7)
    for name, log, axis in (("x", panel.xlog, ax.xaxis), ("y", panel.ylog, ax.yaxis)):
        if log:  # the page's ticks, as plain labels (mathtext ones are slow to draw and read worse)
            (ax.set_xscale if name == "x" else ax.set_yscale)("log")
            ticks = log_ticks(_extent(panel.traces, name), sweep=name == "x")
            axis.set_minor_formatter(mticker.NullFormatter())
            if ticks:
                axis.set_ticks(ticks["tickvals"], ticks["ticktext"])
    ax.grid(alpha=0.3)


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    """Fixed margins, no layout engine: one draw per figure (constrained layout draws it twice)."""
    n, height, legend = len(fig.panels), 3.4, 1.9
    width = 4.6 * n + legend
    mpl, axes = plt.subplots(1, n, figsize=(width, height), dpi=dpi, squeeze=False)
    cats_x = any(t.kind == "bar" for p in fig.panels for t in p.traces)
    cats_y = any(t.kind == "hbar" or (t.y and isinstance(t.y[0], str)) for p in fig.panels for t in p.traces)
    top = 1 - 0.5 / height
    mpl.subplots_adjust(
        left=(1.0 if cats_y else 0.65) / width,
        right=1 - legend / width,
        top=top,
        bottom=(1.15 if cats_x else 0.55) / height,
        wspace=0.45 if cats_y else 0.3,
    )
    for ax, panel in zip(axes[0], fig.panels):
        _draw(ax, panel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        mpl.legend(
            handles,
            labels,
            loc="upper left",
            bbox_to_anchor=(1 - (legend - 0.1) / width, top),
            fontsize=7,
            frameon=False,
        )
    mpl.suptitle(fig.title, fontsize=9)
    buf = io.BytesIO()
    mpl.savefig(buf, format="png")
    plt.close(mpl)
    return buf.getvalue()
