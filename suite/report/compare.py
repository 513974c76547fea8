"""Compare two results directories, as a gate: per (experiment, task config, model), the change of
the primary metric from A to B, tested with Welch's t (two-sided, log scale for losses; n and degrees
of freedom shown), Holm-corrected over every row. "not testable" when n < 2 or there is no spread.
Differences in the two runs' protocols (profile data, device, torch, threads) are warned about."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from suite.report import stats, tables

KEYS = ["experiment", "config", "model"]


def _table(store) -> pd.DataFrame:
    kinds = tables.load(store)
    train = kinds.get("train", pd.DataFrame())
    return tables.task_table(train) if not train.empty else pd.DataFrame()


def compare(a, b) -> pd.DataFrame:
    ta, tb = _table(a), _table(b)
    if ta.empty or tb.empty:
        return pd.DataFrame()
    merged = ta.merge(tb, on=KEYS, how="outer", suffixes=("_a", "_b"))
    rows, results = [], []
    for _, r in merged.iterrows():
        row = {
            **{k: r[k] for k in KEYS},
            "metric": r["metric_a"] if pd.notna(r.get("metric_a")) else r.get("metric_b"),
        }
        if pd.isna(r.get("mean_a")) or pd.isna(r.get("mean_b")):
            rows.append(
                {
                    **row,
                    "A": r.get("mean_a"),
                    "B": r.get("mean_b"),
                    "note": "only in A" if pd.isna(r.get("mean_b")) else "only in B",
                }
            )
            continue
        higher = bool(r["higher_is_better_a"])
        # B against A: a ratio B/A on the log scale, B − A on the raw scale
        result = stats.welch(
            r["values_b"], r["values_a"], log=stats.log_scale(row["metric"], higher), min_n=2
        )
        results.append(result)
        rows.append(
            {
                **row,
                "A": r["mean_a"],
                "B": r["mean_b"],
                "n": f"{result['n_b']} vs {result['n_a']}",
                "_result": result,
                "_higher": higher,
            }
        )
    stats.holm(results)
    return pd.DataFrame([_finish(row) for row in rows])


def _finish(row: dict) -> dict:
    result, higher = row.pop("_result", None), row.pop("_higher", None)
    if result is None:
        return {
            **row,
            "change": None,
            "CI low": None,
            "CI high": None,
            "df": None,
            "p (Holm)": None,
            "significant": None,
            "verdict": row.pop("note"),
            "why": "the row is in one run only",
        }
    testable = result.get("testable")
    sig = stats.significant(result)
    verdict = (
        ("improved" if stats.a_is_better(result, higher) else "REGRESSED")
        if sig
        else ("no significant change" if testable else "not testable")
    )
    why = stats.describe(result)
    return {
        **row,
        "change": result.get("difference"),
        "change is": "ratio B/A" if result["scale"] == "log" else "B − A",
        "CI low": result.get("ci_low"),
        "CI high": result.get("ci_high"),
        "df": result.get("df"),
        "p (Holm)": result.get("p_holm"),
        "significant": sig,
        "verdict": verdict,
        "why": why,
    }


def regressions(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["verdict"] == "REGRESSED"] if not df.empty else df


def protocol_differences(a, b) -> list[str]:
    """What differs between the two runs' protocols, as warning lines."""
    ia, ib = a.run_info(), b.run_info()
    ea, eb = ia.get("env", {}), ib.get("env", {})
    out = []
    if ia.get("profile_data") != ib.get("profile_data"):
        out.append(
            f"the profiles differ ({ia.get('profile')} vs {ib.get('profile')}): task parameters, budgets or "
            "seeds may not match"
        )
    for key in ("device", "device_name", "dtype", "torch", "threads", "flush_denormals"):
        if ea.get(key) != eb.get(key):
            out.append(f"{key} differs: {ea.get(key)} vs {eb.get(key)}")
    return out


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def format_text(df: pd.DataFrame, a: str, b: str, warnings: Sequence[str] = ()) -> str:
    lines = [f"warning: {w}" for w in warnings]
    if df.empty:
        return "\n".join(lines + [f"nothing to compare: {a} or {b} holds no finished training record"])
    lines.append(
        f"A = {a}   B = {b}   (Welch's t per row, two-sided, log scale for losses; Holm over {len(df)} rows)"
    )
    for r in df.to_dict("records"):
        lines.append(
            f"{r['config']:40s} {r['model']:16s} {r['metric']!s:8s} A={_fmt(r['A']):>9s} "
            f"B={_fmt(r['B']):>9s} "
            f"change={_fmt(r.get('change')):>7s} [{_fmt(r.get('CI low'))}, {_fmt(r.get('CI high'))}] "
            f"n={r.get('n', '–')} df={_fmt(r.get('df'))} p={_fmt(r.get('p (Holm)'))}  {r['verdict']}"
        )
    return "\n".join(lines)


def write_compare_html(df: pd.DataFrame, a: str, b: str, out: Path, warnings: Sequence[str] = ()) -> Path:
    """The comparison as a page in the report's style: a sortable, filterable table, regressions first,
    every verdict in colour and words."""
    from suite.report import views
    from suite.report.build import jinja
    from suite.report.html_tables import html_table

    out.parent.mkdir(parents=True, exist_ok=True)
    verdicts = list(df["verdict"]) if not df.empty else []
    lead = [
        (kind, f"{n} {word}")
        for kind, word, n in (
            ("no", "regressed", verdicts.count("REGRESSED")),
            ("yes", "improved", verdicts.count("improved")),
            ("none", "unchanged", verdicts.count("no significant change")),
            ("inconclusive", "not testable", verdicts.count("not testable")),
            ("none", "in one run only", sum(v.startswith("only in") for v in verdicts)),
        )
        if n
    ]
    table, filters = "", {}
    if not df.empty:
        table = html_table(
            views.compare(df),
            table_id="t-compare",
            caption="Regressions first, then improvements. Click ▸ for the test.",
        )
        filters = {
            "model": sorted(set(df["model"])),
            "task": sorted({c.split("(")[0] for c in df["config"]}),
            "experiment": sorted(set(df["experiment"])),
        }
    page = (
        jinja()
        .get_template("compare.html.j2")
        .render(
            title="lstm-bench: run comparison",
            a=a,
            b=b,
            lead=lead,
            warnings=list(warnings),
            table=table,
            filters=filters,
        )
    )
    out.write_text(page)
    return out
