"""Build the HTML report of a results directory, and refresh reports/index.html.

The page answers first (per task config, the best LSTM against the best Transformer, and the claims'
verdicts), then shows the evidence grouped by experiment role. Tables sort and filter in the page;
figures are interactive plotly charts (plotly.js embedded once: the file works offline and requests
nothing). Every figure is also written as PNG and every table as CSV beside the page.

Layers: tables.py (pandas: the numbers) -> views.py (display cells) and figures.py (figure specs)
-> html_tables.py and render.py (HTML, plotly JSON, PNG) -> templates/report.html.j2."""

from __future__ import annotations

import html
import json
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from suite.report import claims, figures, length_generalization, render, tables, views
from suite.report.html_tables import html_table
from suite.store import MICROBENCH

TEMPLATES = Path(__file__).parent / "templates"
NAV = {
    "main": "Main",
    "ablation": "Ablation",
    "lr-sweep": "LR sweep",
    "equal-time": "Equal time",
    "stability": "Stability",
    "throughput": "Speed",
}
ROLES = {  # experiment role -> (section title, what it asks)
    "main": ("Main comparison", "Every model on every task at an equal backbone size, recipe and budget."),
    "ablation": (
        "Ablation: LSTM variants",
        "Greff et al.'s variants (and GRU, minLSTM) against the vanilla LSTM, same task, size and budget.",
    ),
    "lr-sweep": (
        "Learning-rate sweep",
        "The same models over a grid of fixed learning rates: how wide is "
        "the range that trains? (The sensitivity figure is under Training stability.)",
    ),
    "equal-time": ("Equal wall-clock time", "The comparison at equal training seconds, not equal steps."),
    "length-generalization": (
        "Length generalization",
        "Trained on short strings, tested on every longer length (Delétang et al. 2023's protocol): "
        "accuracy against test length, and our scores beside the published ones.",
    ),
}
CURVES = 4  # learning-curve figures at most per task and role
CAPTIONS = {  # table name -> its caption in the page
    "family": "Best LSTM against best Transformer (Welch's t, Holm-corrected); difference: LSTM − "
    "Transformer, × a ratio LSTM / Transformer for losses. Click ▸ for the test.",
    "claims": "The usual claims, judged only as far as this run's data carries them. Click ▸ for the "
    "evidence.",
    "winners": "Best model per task config; 'how sure' tests it against the best model of another "
    "architecture (Welch's t, Holm-corrected)",
    "lr_windows": "Width of the learning-rate window where a majority of >= 3 seeds succeed (click ▸ for the "
    "metric's spread over the grid)",
    "stability": "Divergence, gradient-norm statistics (means over seeds) and loss spikes, every experiment",
    "throughput": "Throughput at each task's size (median ± spread from the IQR); memory: peak tensor bytes "
    "of a train step. Click ▸ for the backend.",
    "microbench": "pytest-benchmark micro suite: median (IQR) and time relative to nn.LSTM in the same run",
    "step_rates": "The whole training step (forward, backward, clipping, AdamW) of every training run: "
    "training FLOPs per second in the loop (median ± IQR over runs) and its share of the GEMM rate that "
    "the same processes reached at the same thread count (a 2048² torch.mm); the micro-benchmarks below "
    "give the kernels' own roofline.",
    "tuning": "Learning-rate tuning: validation score per grid point and the chosen learning rate; 'where': "
    "inside the grid, beyond it (the grid was extended toward a better end), or at the edge of every point "
    "tried (the best rate may lie further out)",
    "flag_disagreements": "Records whose stored success flag disagrees with their test metric and threshold "
    "(not believed: verdicts use the metric)",
}


def jinja() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))


class Assets:
    """Writes each table as CSV and each figure as PNG beside the page; returns what the page embeds.
    PNGs are drawn by a second process while this one builds the rest (matplotlib is most of the cost)."""

    def __init__(self, out: Path):
        self.out, self.count = out, 0
        self.pending: list[tuple] = []
        fork = "fork" in multiprocessing.get_all_start_methods()  # a forked worker starts with our imports
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) if fork else None

    def close(self) -> None:
        """Wait for the PNGs (a drawing error surfaces here)."""
        try:
            for path, png in self.pending:
                path.write_bytes(png.result())
        finally:
            if self.pool:
                self.pool.shutdown(cancel_futures=True)

    def table(self, raw: pd.DataFrame | None, view, name: str, caption: str = "", **kw) -> str:
        """`view` (a function of `raw`, from views.py) is only called when there is data."""
        if raw is None or raw.empty:
            return ""
        caption, name = caption or CAPTIONS[name], _slug(name)
        raw.drop(columns=[c for c in ("values",) if c in raw]).to_csv(self.out / f"{name}.csv", index=False)
        return html_table(view(raw), table_id=f"t-{name}", caption=caption, csv=f"{name}.csv", **kw)

    def figure(self, spec: figures.Figure | None) -> dict | None:
        if spec is None:
            return None
        self.count += 1
        png = f"{self.count:02d}_{_slug(spec.name)}.png"
        if self.pool:
            self.pending.append((self.out / png, self.pool.submit(render.to_png, spec)))
        else:
            (self.out / png).write_bytes(render.to_png(spec))
        return {
            "id": f"fig-{self.count}",
            "title": spec.title,
            "caption": spec.caption,
            "png": png,
            "json": render.plotly_json(spec),
        }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80]


def _blocks(*items) -> list[tuple[str, object]]:
    """Template blocks, ("table", html) or ("figure", dict), the empty ones dropped."""
    return [("figure", i) if isinstance(i, dict) else ("table", i) for i in items if i]


# ---- sections ------------------------------------------------------------------------------------


def answer(table: pd.DataFrame, family: pd.DataFrame, claim_rows: list[dict], assets: Assets) -> dict:
    return {
        "lead": views.lead(family),
        "lr_protocol": tables.lr_protocol(table) if not table.empty else "",
        "summary": assets.table(
            family,
            lambda f: views.summary(f, table),
            "family",
            titles=views.SUMMARY_TITLES,
            wrap=("task config",),
        ),
        "claims": assets.table(
            pd.DataFrame(claim_rows), lambda _: views.claims(claim_rows), "claims", wrap=("claim", "why")
        ),
        "claim_list": [
            (views.claim_kind(c["verdict"]), c["verdict"], c["claim"], c["why"]) for c in claim_rows
        ],
    }


def role_section(role: str, table, win, train, scores, colors, assets: Assets) -> dict:
    """One experiment role: its best models (`win`: tables.winners over every role, one Holm family), then
    an anchor per task with its table and figures."""
    title, intro = ROLES.get(role, (f"Experiment role: {role}", ""))
    rows = table[table["role"] == role]
    best = win[win["role"] == role] if role != "lr-sweep" else None  # a sweep has no winner to name
    blocks = _blocks(
        assets.table(best, views.winners, f"winners_{role}", CAPTIONS["winners"], wrap=("how sure",))
    )
    if role == length_generalization.ROLE:  # our numbers beside the published ones
        lg = length_generalization
        blocks += _blocks(
            assets.table(lg.published_table(train), lg.view, "length_generalization", lg.CAPTION)
        )
    tasks = []
    for task, g in rows.groupby("task", sort=False):
        info = train.loc[train["task"] == task, "task_info"].dropna() if "task_info" in train else pd.Series()
        caption = (
            f"{task}: test {g['metric'].iloc[0]} over seeds (best-validation checkpoint); baseline: "
            f"{g['baseline_name'].iloc[0]}. Click ▸ for per-seed scores."
        )
        table_html = assets.table(g, views.task_rows, f"{role}_{task}", caption)
        figs = _role_figures(role, task, g, table, train, scores, colors, assets)
        tasks.append(
            {
                "id": views.task_anchor(task) if role == "main" else _slug(f"{role}-{task}"),
                "title": task,
                "family": g["task_family"].iloc[0],
                "info": info.iloc[0] if len(info) else None,
                "blocks": _blocks(table_html, *figs),
            }
        )
    return {"id": _slug(role), "title": title, "intro": intro, "blocks": blocks, "tasks": tasks}


def _role_figures(role, task, g, table, train, scores, colors, assets) -> list:
    metric, configs = g["metric"].iloc[0], list(g["config"].unique())[:CURVES]
    mine = train[train["role"] == role]
    if role == "main":
        out = [assets.figure(figures.metric_vs_length(table, scores, task, colors, train))]
        for config in configs:
            out.append(assets.figure(figures.learning_curves(mine, config, metric, colors)))
            if g["task_family"].iloc[0] == "forecasting":
                out.append(assets.figure(figures.forecast(mine, config, colors)))
        return out
    if role == "lr-sweep":
        return []  # the sensitivity figure (stability section) shows every task of the sweep
    if role == length_generalization.ROLE:
        return [assets.figure(length_generalization.accuracy_vs_length(train, task, colors))]
    timed = any(isinstance(t, dict) and t.get("seconds") for t in mine.loc[mine["task"] == task, "recipe"])
    out = []
    for config in configs:
        out.append(assets.figure(figures.seed_strip(scores, table, config, role, colors, train)))
        out.append(
            assets.figure(
                figures.learning_curves(
                    mine, config, metric, colors, x="seconds" if timed else "step", name=role
                )
            )
        )
    return out


def stability_section(table, train, scores, colors, assets: Assets, missing: list) -> dict:
    lr = tables.lr_windows(table)
    if lr.empty:
        missing.append("no experiment with role 'lr-sweep': the LR-window comparison is absent")
    stab = table[
        [
            "experiment",
            "config",
            "model",
            "family",
            "task",
            "seeds",
            "successes",
            "diverged",
            "grad_norm_median",
            "grad_norm_p99",
            "clip_events",
            "loss_spikes",
        ]
    ]
    return {
        "id": "stability",
        "title": "Training stability",
        "tasks": [],
        "intro": "How wide a range of learning rates trains, how often runs diverge, how large the "
        "gradients get.",
        "blocks": _blocks(
            assets.table(lr, views.lr_windows, "lr_windows"),
            assets.figure(figures.lr_sensitivity(table, scores, train, colors)),
            assets.table(stab, lambda _: views.stability(table), "stability"),
            assets.figure(figures.grad_norms(train)),
        ),
    }


def speed_section(kinds: dict, root: Path, colors, assets: Assets, missing: list) -> dict:
    thr = tables.throughput_table(kinds.get("throughput"))
    rates = tables.step_rate_table(kinds.get("train"))
    mb = tables.microbench_table(root / MICROBENCH)
    if thr.empty:
        missing.append("no throughput records")
    if mb.empty:
        missing.append(
            f"no micro-benchmark results ({MICROBENCH}); `make microbench RESULTS={root}` adds them"
        )
    roof = "; achieved GFLOP/s and its share of the machine's GEMM rate" if "pct_of_gemm" in mb else ""
    return {
        "id": "throughput",
        "title": "Throughput and cost",
        "tasks": [],
        "intro": "Speed and memory at each task's size, per-token decoding latency, sequence-length "
        "scaling, and the LSTM implementations' micro-benchmarks.",
        "blocks": _blocks(
            assets.table(thr, views.throughput, "throughput"),
            assets.figure(figures.throughput(thr, kinds.get("throughput"), colors)),
            assets.table(rates, views.step_rates, "step_rates"),
            assets.figure(figures.latency(kinds.get("latency"), colors)),
            assets.figure(figures.scaling(kinds.get("scaling"), colors)),
            assets.table(
                mb,
                views.microbench,
                "microbench",
                CAPTIONS["microbench"] + roof + f" (on {_machine(root / MICROBENCH)})",
            ),
            assets.figure(figures.microbench(mb, _machine(root / MICROBENCH))),
        ),
    }


def _machine(path: Path) -> str:
    try:
        info = json.loads(path.read_text()).get("machine_info", {})
    except (OSError, ValueError):
        return "?"
    cpu = info.get("cpu") if isinstance(info.get("cpu"), dict) else {}
    name = info.get("cpu_model") or cpu.get("brand_raw", info.get("processor", "?"))  # lscpu's model name
    gemm = info.get("gemm_gflops")
    rate = f"; GEMM rate {gemm:.0f} GFLOP/s (torch.mm, 2048²)" if isinstance(gemm, (int, float)) else ""
    return f"{name}, {cpu.get('count', '?')} logical CPUs{rate}"


# ---- the page ------------------------------------------------------------------------------------


def build_context(store, assets: Assets) -> dict:
    info, kinds, records = store.run_info(), tables.load(store), store.records()
    train = kinds.get("train", pd.DataFrame())
    missing = (
        []
        if not train.empty
        else ["no finished training record in this results directory: run `python -m suite run` first"]
    )
    table = tables.task_table(train, kinds.get("tuning")) if not train.empty else pd.DataFrame()
    scores = tables.seed_scores(train)
    rank = {role: i for i, role in enumerate(ROLES)}  # the main comparison's models get the first colours
    ordered = sorted(
        (r for r in records if r.get("model")),  # recurrent models before attention ones
        key=lambda r: (
            rank.get(r.get("role"), len(rank)),
            r.get("model_family") not in tables.RNN,
            r["model"],
        ),
    )
    colors = figures.Colors({r["model"]: r.get("model_family") for r in ordered})
    family = tables.family_table(table) if not table.empty else pd.DataFrame()
    thr = tables.throughput_table(kinds.get("throughput"))
    claim_rows = (
        [] if table.empty else claims.all_claims(table, tables.lr_windows(table), thr, kinds.get("scaling"))
    )
    sections = []
    if not table.empty:
        roles = dict.fromkeys([r for r in ROLES if r in set(table["role"])] + list(table["role"].unique()))
        win = tables.winners(table)  # Holm over every row of every role, as the summary always was
        sections = [role_section(r, table, win, train, scores, colors, assets) for r in roles]
        sections.append(stability_section(table, train, scores, colors, assets, missing))
    sections.append(speed_section(kinds, store.root, colors, assets, missing))
    tune = tables.tuning_table(kinds.get("tuning"))
    failed = [r for r in records if r.get("status") == "failed"]
    forged = tables.flag_disagreements(train)
    if not forged.empty:
        missing.append(
            f"{len(forged)} training records store a `success` flag that their test metric and threshold "
            "contradict; every verdict re-derives success from the metric (listed in the appendix)"
        )
    return {
        "title": f"lstm-bench report: {store.root.name}",
        "run": info,
        "env": info.get("env", {}),
        "missing": missing,
        "answer": answer(table, family, claim_rows, assets),
        "sections": sections,
        "appendix": assets.table(tune, views.tuning, "tuning", wrap=("validation score per lr",))
        + assets.table(forged, lambda f: f, "flag_disagreements"),
        "counts": pd.Series([r.get("status") for r in records]).value_counts().to_dict(),
        "failed": [
            (r.get("kind"), r.get("task"), r.get("model"), r.get("seed"), r.get("error")) for r in failed[:20]
        ],
        "backends": sorted({r.get("backend") for r in records if r.get("backend")}),
        "seed_count": len({r.get("seed") for r in records if r.get("kind") == "train"}),
        "filters": {
            "task": sorted({r["task"] for r in records if r.get("kind") == "train"}),
            "experiment": sorted({r["experiment"] for r in records if r.get("kind") == "train"}),
            "model": sorted({r["model"] for r in records if r.get("model")}),
        },
        "plotly_js": render.plotly_js() if assets.count else "",
        "nav": NAV,
    }


def write_report(store, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    assets = Assets(out)
    try:
        page = jinja().get_template("report.html.j2").render(**build_context(store, assets))
    finally:
        assets.close()
    path, tmp = out / "report.html", out / "report.html.tmp"
    tmp.write_text(page)
    os.replace(tmp, path)
    write_index(out.parent)
    return path


def write_index(reports_root: Path) -> Path:
    items = sorted(p.relative_to(reports_root) for p in reports_root.glob("*/report.html"))
    links = "".join(
        f'<li><a href="{html.escape(str(p))}">{html.escape(str(p.parent))}</a></li>' for p in items
    )
    path = reports_root / "index.html"
    path.write_text(
        "<!doctype html><meta charset='utf-8'><title>lstm-bench reports</title>"
        f"<h1>lstm-bench reports</h1><ul>{links}</ul>"
    )
    return path
