"""Build the self-contained HTML report of a results directory (figures embedded as base64 PNG,
no external request), with the PNG figures and CSV tables written beside it, and refresh
reports/index.html. Missing data yields a section that says what is missing."""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from suite.report import claims, figures, tables
from suite.store import MICROBENCH

TEMPLATES = Path(__file__).parent / "templates"


def _num(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int,)) and not isinstance(x, bool):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"
    return html.escape(str(x))


def html_table(df: pd.DataFrame, caption: str = "") -> str:
    if df is None or df.empty:
        return ""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_num(v)}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f'<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class Assets:
    """Saves figures and tables beside the report and returns what the template embeds."""

    def __init__(self, out: Path):
        self.out = out
        self.count = 0

    def figure(self, fig, name: str, alt: str) -> str | None:
        if fig is None:
            return None
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        plt.close(fig)
        data = buf.getvalue()
        self.count += 1
        (self.out / f"{self.count:02d}_{name}.png").write_bytes(data)
        return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}"><figcaption>{html.escape(alt)}</figcaption></figure>'

    def table(self, df: pd.DataFrame, name: str, caption: str = "") -> str:
        if df is None or df.empty:
            return ""
        df.to_csv(self.out / f"{name}.csv", index=False)
        return html_table(df, caption)


def _fmt_pm(mean, std):
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.4g} ± {std:.2g}" if std is not None and not (isinstance(std, float) and math.isnan(std)) else f"{mean:.4g}"


def build_context(store, out: Path) -> dict:
    info = store.run_info()
    kinds = tables.load(store)
    assets = Assets(out)
    train = kinds.get("train", pd.DataFrame())
    missing = []
    ctx = {"title": f"lstm-bench report: {store.root.name}", "run": info, "env": info.get("env", {}), "missing": missing,
           "summary": "", "tasks": [], "stability": {}, "throughput": {}, "claims": [], "counts": {}}
    if train.empty:
        missing.append("no finished training record in this results directory: run `python -m suite run` first")
    records = store.records()
    ctx["counts"] = pd.Series([r.get("status") for r in records]).value_counts().to_dict() if records else {}
    failed = [r for r in records if r.get("status") == "failed"]
    ctx["failed"] = [(r.get("kind"), r.get("task"), r.get("model"), r.get("seed"), r.get("error")) for r in failed[:20]]

    table = tables.task_table(train, kinds.get("tuning")) if not train.empty else pd.DataFrame()
    win = tables.winners(table) if not table.empty else pd.DataFrame()
    ctx["lr_protocol"] = tables.lr_protocol(table) if not table.empty else ""
    family = tables.family_table(table) if not table.empty else pd.DataFrame()
    ctx["family"] = assets.table(family, "family", "LSTM family against Transformer family, per task config "
                                 "(best of each family; twins counted once; Welch's t, Holm-corrected)")
    if not win.empty:
        show = win[win["role"] != "lr-sweep"].copy()  # the LR sweep belongs to section 4
        show["best (mean ± std)"] = [_fmt_pm(m, s) for m, s in zip(show["mean"], show["std"])]
        ctx["summary"] = assets.table(show[["config", "metric", "best model", "best (mean ± std)", "baseline", "beats baseline",
                                            "how sure", "runner-up", "runner-up mean", "experiment", "seeds",
                                            "backbone params", "lr", "budget"]],
                                      "summary", "Best model per task config (equal backbone size, equal budget); "
                                      "runner-up: the best model of another architecture")
    ctx["tuning"] = assets.table(tables.tuning_table(kinds.get("tuning")), "tuning",
                                 "learning-rate tuning: validation score per grid point, chosen learning rate")
    # ---- per task ----------------------------------------------------------------------
    for task, g in (table.groupby("task", sort=False) if not table.empty else []):
        section = {"name": task, "family": g["task_family"].iloc[0], "tables": [], "figures": []}
        shown = g[["experiment", "config", "model", "metric", "mean", "std", "min", "max", "seeds", "success_rate", "diverged",
                   "failed", "baseline", "params", "backbone_params", "lookup_params", "lr", "flops_per_token",
                   "train_flops_per_token", "time_to_threshold_s"]]
        section["tables"].append(assets.table(shown, f"task_{task}", f"{task}: test {g['metric'].iloc[0]} over seeds "
                                              f"(best-validation checkpoint); baseline: {g['baseline_name'].iloc[0]}"))
        infos = train[train["task"] == task]["task_info"].dropna()
        if len(infos):
            section["info"] = infos.iloc[0]
        for config in g[g["role"] == "main"]["config"].unique()[:4]:
            section["figures"].append(assets.figure(figures.learning_curves(train, config, g["metric"].iloc[0]), f"curve_{task}", f"learning curves: {config}"))
            if section["family"] == "forecasting":
                section["figures"].append(assets.figure(figures.forecast_plot(train, config), f"forecast_{task}", f"prediction vs ground truth: {config}"))
        if section["family"] == "long-dependency":
            section["figures"].append(assets.figure(figures.metric_vs_length(table, task), f"length_{task}", f"{task}: metric against sequence length"))
        section["figures"] = [f for f in section["figures"] if f]
        ctx["tasks"].append(section)

    # ---- stability ---------------------------------------------------------------------
    lr = tables.lr_windows(table) if not table.empty else pd.DataFrame()
    if not table.empty:
        stab = table[["experiment", "config", "model", "family", "seeds", "diverged", "success_rate", "grad_norm_median",
                      "grad_norm_p99", "clip_events", "loss_spikes"]]
        ctx["stability"] = {
            "table": assets.table(stab, "stability", "divergence, gradient-norm statistics (means over seeds) and loss spikes"),
            "lr_table": assets.table(lr, "lr_windows", "width of the learning-rate window where a majority of >= 3 seeds "
                                     "succeed, and the spread of the final metric over the grid"),
            "figures": [f for f in (assets.figure(figures.lr_sensitivity(table), "lr", "learning-rate sensitivity"),
                                    assets.figure(figures.grad_norms(train), "gradnorm", "gradient-norm distributions")) if f]}
        if lr.empty:
            missing.append("no experiment with role 'lr-sweep': the LR-window comparison is absent")
    # ---- throughput --------------------------------------------------------------------
    thr = tables.throughput_table(kinds.get("throughput"))
    mb = tables.microbench_table(store.root / MICROBENCH)
    ctx["throughput"] = {
        "table": assets.table(thr, "throughput", "throughput at each task's size (median; spread from the IQR); memory: peak tensor bytes of a train step"),
        "micro": assets.table(mb, "microbench", "pytest-benchmark micro suite: ratio against nn.LSTM measured in the same run"),
        "figures": [f for f in (assets.figure(figures.throughput_bars(thr), "throughput", "tokens per second"),
                                assets.figure(figures.latency_plot(kinds.get("latency")), "latency", "per-token latency against context"),
                                assets.figure(figures.scaling_plot(kinds.get("scaling")), "scaling", "time and memory against sequence length"),
                                assets.figure(figures.microbench_plot(mb), "microbench", "LSTM implementations vs nn.LSTM")) if f]}
    if thr.empty:
        missing.append("no throughput records")
    if mb.empty:
        missing.append(f"no micro-benchmark results ({MICROBENCH}); `make microbench RESULTS={store.root}` adds them")
    if not table.empty:
        ctx["claims"] = claims.all_claims(table, lr, thr, kinds.get("scaling"))
    backends = sorted({r.get("backend") for r in records if r.get("backend")})
    ctx["backends"] = backends
    seeds = sorted({r.get("seed") for r in records if r.get("kind") == "train"})
    ctx["seed_count"] = len(seeds)
    return ctx


def write_report(store, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    page = env.get_template("report.html.j2").render(**build_context(store, out))
    path = out / "report.html"
    tmp = out / "report.html.tmp"
    tmp.write_text(page)
    os.replace(tmp, path)
    write_index(out.parent)
    return path


def write_index(reports_root: Path) -> Path:
    items = sorted(p.relative_to(reports_root) for p in reports_root.glob("*/report.html"))
    links = "".join(f'<li><a href="{html.escape(str(p))}">{html.escape(str(p.parent))}</a></li>' for p in items)
    path = reports_root / "index.html"
    path.write_text(f"<!doctype html><meta charset='utf-8'><title>lstm-bench reports</title><h1>lstm-bench reports</h1><ul>{links}</ul>")
    return path
