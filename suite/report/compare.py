"""Compare two results directories: per (task config, model), the change of the primary metric,
called significant when it exceeds 2 standard errors of the difference (from the seed spreads)."""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd

from suite.report import tables


def compare(a, b) -> pd.DataFrame:
    ta, tb = (tables.task_table(tables.load(s).get("train", pd.DataFrame())) if tables.load(s) else pd.DataFrame() for s in (a, b))
    if ta.empty or tb.empty:
        return pd.DataFrame()
    keys = ["experiment", "config", "model"]
    m = ta.merge(tb, on=keys, how="outer", suffixes=("_a", "_b"))
    rows = []
    for _, r in m.iterrows():
        ma, mb = r.get("mean_a"), r.get("mean_b")
        if pd.isna(ma) or pd.isna(mb):
            rows.append({**{k: r[k] for k in keys}, "metric": r.get("metric_a") if pd.notna(r.get("metric_a")) else r.get("metric_b"),
                         "A": ma, "B": mb, "change": None, "threshold": None, "significant": None,
                         "note": "only in A" if pd.isna(mb) else "only in B"})
            continue
        se = math.sqrt((r["std_a"] or 0) ** 2 / max(r["seeds_a"], 1) + (r["std_b"] or 0) ** 2 / max(r["seeds_b"], 1))
        change = mb - ma
        higher = bool(r["higher_is_better_a"])
        better = (change > 0) == higher
        threshold = 2 * se
        sig = abs(change) > threshold if se > 0 else change != 0
        rows.append({**{k: r[k] for k in keys}, "metric": r["metric_a"], "A": ma, "B": mb, "change": change,
                     "threshold": threshold, "significant": sig, "note": ("better" if better else "worse") if sig and change else ""})
    return pd.DataFrame(rows)


def format_text(df: pd.DataFrame, a: str, b: str) -> str:
    if df.empty:
        return f"nothing to compare: {a} or {b} holds no finished training record"
    lines = [f"A = {a}   B = {b}   (significant: |B - A| > 2 standard errors from the seed spreads)"]
    for r in df.itertuples():
        fmt = lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"  # noqa: E731
        lines.append(f"{r.config:40s} {r.model:16s} {r.metric:8s} A={fmt(r.A):>9s} B={fmt(r.B):>9s} "
                     f"change={fmt(r.change):>9s} {'SIGNIFICANT ' + r.note if r.significant else r.note or ''}")
    return "\n".join(lines)


def write_compare_html(df: pd.DataFrame, a: str, b: str, out: Path) -> Path:
    from suite.report.build import html_table

    out.parent.mkdir(parents=True, exist_ok=True)
    body = html_table(df, f"A = {a}, B = {b}; significant when |B − A| > 2 standard errors") if not df.empty else "<p>nothing to compare</p>"
    out.write_text(f"<!doctype html><meta charset='utf-8'><title>compare</title><h1>Run comparison</h1>{body}")
    return out
