"""Which columns each report table shows, in what words, and how each number is rounded. Input: the pandas
tables of suite/report/tables.py, their meaning untouched (the CSV exports keep them raw). Output:
DataFrames of display cells for suite/report/html_tables.py. The hidden columns "_model", "_task" and
"_experiment" drive the page's filters, "_detail" is the HTML of a row's expandable details and "_row"
a CSS class of the row."""

from __future__ import annotations

import html

import pandas as pd

from suite.report.html_tables import (
    MISSING,
    Cell,
    chip,
    decimals,
    finite,
    fixed,
    interval,
    number,
    p_value,
    pm,
)
from suite.report.tables import short_configs

ARROW = {True: "↑", False: "↓"}


def task_anchor(task: str) -> str:
    return f"task-{task}"


def _task(config: str) -> str:
    return config.split("(")[0]


def _config_link(config: str, short: str) -> str:
    """A task config's short name linking to its task's section, the full label on hover."""
    return f'<a href="#{task_anchor(_task(config))}" title="{html.escape(config)}">{html.escape(short)}</a>'


def _configs(df: pd.DataFrame) -> dict[str, Cell]:
    """The config column's cells: short names, the full label on hover, sorted on the full label."""
    return {c: Cell(short, c, title=c) for c, short in short_configs(list(df["config"].unique())).items()}


def _with_title(cell: Cell, title: str) -> Cell:
    return Cell(cell.text.replace("<span ", f'<span title="{html.escape(title)}" ', 1), cell.sort, safe=True)


def _details(pairs: list[tuple[str, object]]) -> str:
    items = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>"
        for k, v in pairs
        if v is not None and v == v and v not in ("", MISSING)
    )
    return f"<dl>{items}</dl>"


def _model_mean(model: str, mean, std) -> Cell:
    """The model's name above its mean ± std: two short lines keep the summary narrow."""
    value = pm(mean, std)
    return Cell(
        f'<span class="model">{html.escape(model)}</span><br>{html.escape(value.text)}', value.sort, safe=True
    )


def _lr(lr) -> Cell:
    return Cell(f"{lr:g}", float(lr)) if finite(lr) else Cell(MISSING)


# ---- verdict words -------------------------------------------------------------------------------


def family_chip(verdict: str) -> Cell:
    head = verdict.split(" (")[0]
    kind = {"LSTM better": "lstm", "Transformer better": "transformer", "no detectable difference": "none"}
    return _with_title(chip(head, kind.get(head, "inconclusive")), verdict)


def claim_kind(verdict: str) -> str:
    return {"supported": "yes", "not supported": "no"}.get(verdict, "inconclusive")


def claim_chip(verdict: str) -> Cell:
    return chip(verdict, claim_kind(verdict))


def compare_chip(verdict: str) -> Cell:
    kind = {"improved": "yes", "REGRESSED": "no"}.get(verdict)
    kind = kind or ("inconclusive" if verdict.startswith("not testable") else "none")
    words = {"REGRESSED": "regressed", "no significant change": "unchanged"}
    word = words.get(verdict, verdict.split(" (")[0])
    return _with_title(chip(word, kind), verdict)


# ---- the answer ----------------------------------------------------------------------------------


def lead(family: pd.DataFrame) -> str:
    """One sentence: how many task configs each family wins, and why the others are undecided."""
    if family.empty:
        return ""
    heads = [v.split(" (")[0] for v in family["verdict"]]
    said = [
        f"{what} on {heads.count(head)}"
        for head, what in (
            ("LSTM better", "the LSTM family is better"),
            ("Transformer better", "the Transformer family is better"),
            ("no detectable difference", "no detectable difference"),
        )
        if heads.count(head)
    ]
    undecided = [v for v in family["verdict"] if v.startswith("inconclusive")]
    if undecided:
        why = sorted({v.split("(", 1)[1].split(",")[0].rstrip(")") for v in undecided if "(" in v})
        said.append(f"inconclusive on {len(undecided)}" + (f" ({'; '.join(why)})" if why else ""))
    return f"Across {len(family)} task configs of the main comparison: {', '.join(said)}."


SUMMARY_TITLES = {
    "difference (95% CI)": "LSTM − Transformer on the raw scale (accuracy), or the ratio LSTM / Transformer "
    "(×) for losses, MSE and bits; Welch's 95% confidence interval in brackets",
    "seeds": "finished seeds, LSTM vs Transformer",
    "beats baseline": "does the better of the two beat the task's headline baseline?",
}


def summary(family: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The first screen: per main task config, the best LSTM against the best Transformer, in words."""
    if family.empty:
        return family
    std = table.set_index(["experiment", "config", "model"])["std"].to_dict()
    keys = ["experiment", "config"]
    higher = table.drop_duplicates(keys).set_index(keys)["higher_is_better"]
    short, rows = short_configs(list(family["config"])), []
    for r in family.to_dict("records"):
        key = (r["experiment"], r["config"])
        metric = f'<span class="muted">test {html.escape(r["metric"])} {ARROW[bool(higher[key])]}</span>'
        rows.append(
            {
                "task config": Cell(
                    f"{_config_link(r['config'], short[r['config']])}<br>{metric}", r["config"], safe=True
                ),
                "verdict": family_chip(r["verdict"]),
                "best LSTM": _model_mean(r["best LSTM"], r["LSTM mean"], std.get((*key, r["best LSTM"]))),
                "best Transformer": _model_mean(
                    r["best Transformer"], r["Transformer mean"], std.get((*key, r["best Transformer"]))
                ),
                "difference (95% CI)": interval(
                    r["difference"], r["CI low"], r["CI high"], ratio=r["difference is"].startswith("ratio")
                ),
                "seeds": r["n"],
                "beats baseline": r["beats baseline"],
                "_task": r["task"],
                "_experiment": r["experiment"],
                "_model": [r["best LSTM"], r["best Transformer"]],
                "_detail": _details(
                    [
                        ("verdict", r["verdict"]),
                        ("difference is", r["difference is"]),
                        ("test", r["test"]),
                        ("p (Holm-adjusted)", p_value(r["p (Holm)"]).text),
                        ("headline baseline", number(r["baseline"], 4)),
                        ("experiment", r["experiment"]),
                    ]
                ),
            }
        )
    return pd.DataFrame(rows)


def claims(claim_rows: list[dict]) -> pd.DataFrame:
    rows = []
    for c in claim_rows:
        evidence = "".join(f"<li>{html.escape(e)}</li>" for e in c["evidence"]) or "<li>none in this run</li>"
        rows.append(
            {
                "claim": c["claim"],
                "verdict": claim_chip(c["verdict"]),
                "why": c["why"],
                "_detail": f"<b>Evidence</b><ul>{evidence}</ul>",
            }
        )
    return pd.DataFrame(rows)


# ---- training results ----------------------------------------------------------------------------


def _like(x, std) -> Cell:
    """x rounded as the mean beside it is: to its std's first two significant digits."""
    if not finite(x):
        return Cell(MISSING)
    return Cell(fixed(x, decimals(std)) if finite(std) and std > 0 else number(x, 3), float(x))


def _how_sure(text: str) -> Cell:
    """tables.winners' "how sure" as a verdict word, then the test in small print."""
    if text.startswith("inconclusive ("):
        head, rest = "inconclusive", text[len("inconclusive (") : -1]
    else:
        head, _, rest = text.partition(": ")
    kind = {"significant": "sure", "inconclusive": "inconclusive"}.get(head, "none")
    return Cell(f'{chip(head, kind).text} <span class="muted">{html.escape(rest)}</span>', text, safe=True)


def winners(win: pd.DataFrame) -> pd.DataFrame:
    if win.empty:
        return win
    short = short_configs(list(win["config"]))
    return pd.DataFrame(
        [
            {
                "task config": Cell(_config_link(r["config"], short[r["config"]]), r["config"], safe=True),
                "metric": r["metric"],
                "best model": _model_mean(r["best model"], r["mean"], r["std"]),
                "runner-up (other architecture)": _model_mean(r["runner-up"], r["runner-up mean"], None)
                if r["runner-up"]
                else Cell(MISSING),
                "beats baseline": r["beats baseline"],
                "seeds": r["seeds"],
                "how sure": _how_sure(r["how sure"]),
                "_task": _task(r["config"]),
                "_experiment": r["experiment"],
                "_model": [m for m in (r["best model"], r["runner-up"]) if m],
                "_detail": _details(
                    [
                        ("headline baseline", f"{number(r['baseline'], 4)} ({r['baseline name']})"),
                        ("backbone parameters", number(r["backbone params"])),
                        ("learning rate", r["lr"]),
                        ("budget", r["budget"]),
                        ("experiment", r["experiment"]),
                    ]
                ),
            }
            for r in win.to_dict("records")
        ]
    )


def task_rows(g: pd.DataFrame) -> pd.DataFrame:
    """The table of one task in one experiment role: a row per (task config, model)."""
    several, configs = g["config"].nunique() > 1, _configs(g)
    rows = []
    for r in g.to_dict("records"):
        metric = f"{r['metric']} {ARROW[bool(r['higher_is_better'])]}"
        lr = f"{r['lr']:g} ({'tuned' if r['lr_tuned'] else 'fixed'})" if finite(r["lr"]) else None
        rows.append(
            ({"config": configs[r["config"]]} if several else {})
            | {
                "model": r["model"],
                "family": r["family"],
                metric: pm(r["mean"], r["std"]),
                "min": _like(r["min"], r["std"]),
                "max": _like(r["max"], r["std"]),
                "seeds": f"{r['finished']}/{r['seeds']}",
                "success": f"{r['successes']}/{r['seeds']}",
                "diverged": r["diverged"],
                "baseline": number(r["baseline"], 4),
                "lr": _lr(r["lr"]),
                "time to target (s)": r["time_to_threshold_s"],
                "_model": r["model"],
                "_task": r["task"],
                "_experiment": r["experiment"],
                "_detail": _details(
                    [
                        ("per-seed scores", ", ".join(number(v, 4) for v in r["values"])),
                        (
                            "parameters: backbone + lookups",
                            f"{number(r['params'])} = {number(r['backbone_params'])} + "
                            f"{number(r['lookup_params'])}",
                        ),
                        (
                            "FLOPs per token: forward, train step",
                            f"{number(r['flops_per_token'])}, {number(r['train_flops_per_token'])}",
                        ),
                        ("learning rate", lr),
                        ("tuning seconds", number(r["tuning_seconds"])),
                        ("budget", r["budget"]),
                        ("failed runs", r["failed"]),
                        ("headline baseline", r["baseline_name"]),
                    ]
                ),
            }
        )
    return pd.DataFrame(rows)


def stability(table: pd.DataFrame) -> pd.DataFrame:
    configs = _configs(table)
    return pd.DataFrame(
        [
            {
                "experiment": r["experiment"],
                "config": configs[r["config"]],
                "model": r["model"],
                "family": r["family"],
                "diverged": f"{r['diverged']}/{r['seeds']}",
                "success": f"{r['successes']}/{r['seeds']}",
                "grad norm median": r["grad_norm_median"],
                "grad norm p99": r["grad_norm_p99"],
                "clip events": r["clip_events"],
                "loss spikes": r["loss_spikes"],
                "_model": r["model"],
                "_task": r["task"],
                "_experiment": r["experiment"],
            }
            for r in table.to_dict("records")
        ]
    )


def lr_windows(lr: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "task": r["task"],
                "model": r["model"],
                "family": r["family"],
                "LR window (decades)": r["window_decades"],
                "lowest good lr": _lr(r["lowest_ok_lr"]),
                "highest good lr": _lr(r["highest_ok_lr"]),
                "good grid points": r["grid_points_ok"],
                "seeds per point": r["seeds_per_point"],
                "diverged runs": f"{r['diverged_runs']}/{r['runs']}",
                "_model": r["model"],
                "_task": r["task"],
                "_detail": _details(
                    [
                        (
                            "spread of the final metric over the grid",
                            f"{number(r['metric_spread_over_grid'])} ({r['spread_scale']})",
                        )
                    ]
                ),
            }
            for r in lr.to_dict("records")
        ]
    )


def tuning(tune: pd.DataFrame) -> pd.DataFrame:
    configs = _configs(tune)
    return pd.DataFrame(
        [
            {
                "experiment": r["experiment"],
                "config": configs[r["config"]],
                "model": r["model"],
                "chosen lr": _lr(r["chosen lr"]),
                "validation score per lr": r["validation score per lr"],
                "metric": r["metric"],
                "tuning runs": r["tuning runs"],
                "tuning seconds": r["tuning seconds"],
                "_model": r["model"],
                "_task": _task(r["config"]),
                "_experiment": r["experiment"],
            }
            for r in tune.to_dict("records")
        ]
    )


# ---- speed ---------------------------------------------------------------------------------------


def throughput(thr: pd.DataFrame) -> pd.DataFrame:
    configs = _configs(thr)
    return pd.DataFrame(
        [
            {
                "config": configs[r["config"]],
                "model": r["model"],
                "T": r.get("seq_len"),
                "batch": r.get("batch_size"),
                "threads": r.get("timing_threads"),
                "train tokens/s": pm(r.get("train_tokens_per_s"), r.get("train_spread_tokens_per_s")),
                "inference tokens/s": pm(
                    r.get("inference_tokens_per_s"), r.get("inference_spread_tokens_per_s")
                ),
                "train FLOPs/token": r.get("train_flops_per_token"),
                "peak train memory (MiB)": r["train_peak_bytes"] / 2**20
                if finite(r.get("train_peak_bytes"))
                else None,
                "_model": r["model"],
                "_task": _task(r["config"]),
                "_detail": _details(
                    [
                        ("backend", r.get("backend")),
                        ("backbone parameters", number(r.get("backbone_params"))),
                        (
                            "train step: median (IQR)",
                            f"{number(r.get('train_step_seconds'))} s "
                            f"({number(r.get('train_iqr_seconds'))} s)",
                        ),
                        ("the train step timed again", f"{number(r.get('train_repeat_step_seconds'))} s"),
                        ("forward FLOPs/token", number(r.get("flops_per_token"))),
                        ("compile seconds (not in the timings)", number(r.get("compile_seconds"))),
                    ]
                ),
            }
            for r in thr.to_dict("records")
        ]
    )


def microbench(mb: pd.DataFrame) -> pd.DataFrame:
    """The micro suite, with the roofline columns (GFLOP/s, % of GEMM rate) where the benchmarks gave them."""
    rows = []
    for r in mb.to_dict("records"):
        row = {
            "impl": r["impl"],
            "mode": r.get("mode"),
            "size (B, T, I, H)": f"{r.get('B')}, {r.get('T')}, {r.get('I')}, {r.get('H')}",
            "threads": r.get("threads"),
            "median ms (IQR)": _median_iqr(r["median_ms"], r["iqr_ms"]),
            "× nn.LSTM": r.get("x_vs_nn_lstm"),
        }
        row |= {"GFLOP/s": r.get("gflops")} if "gflops" in mb else {}
        row |= {"% of GEMM rate": r.get("pct_of_gemm")} if "pct_of_gemm" in mb else {}
        backend = r.get("backend")
        detail = _details([("backend", backend)]) if isinstance(backend, str) and backend else None
        rows.append(row | {"_model": r["impl"]} | ({"_detail": detail} if detail else {}))
    return pd.DataFrame(rows)


def _median_iqr(median, iqr) -> Cell:
    if not finite(median):
        return Cell(MISSING)
    places = max(decimals(iqr), 0) if finite(iqr) and iqr > 0 else 3
    return Cell(f"{fixed(median, places)} ({fixed(iqr, places)})", float(median))


# ---- compare -------------------------------------------------------------------------------------


def compare(df: pd.DataFrame) -> pd.DataFrame:
    """compare.py's table in words: regressions first, then improvements, then the rest."""
    order = {"REGRESSED": 0, "improved": 1}
    df = df.iloc[sorted(range(len(df)), key=lambda i: order.get(df["verdict"].iloc[i], 2))]
    configs = _configs(df)
    return pd.DataFrame(
        [
            {
                "verdict": compare_chip(r["verdict"]),
                "config": configs[r["config"]],
                "model": r["model"],
                "metric": r["metric"],
                "A": r["A"],
                "B": r["B"],
                "change (95% CI)": interval(
                    r.get("change"),
                    r.get("CI low"),
                    r.get("CI high"),
                    ratio=str(r.get("change is", "")).startswith("ratio"),
                ),
                "n (B vs A)": r.get("n"),
                "p (Holm)": p_value(r.get("p (Holm)")),
                "experiment": r["experiment"],
                "_model": r["model"],
                "_task": _task(r["config"]),
                "_experiment": r["experiment"],
                "_row": {"REGRESSED": "row-no", "improved": "row-yes"}.get(r["verdict"], ""),
                "_detail": _details(
                    [
                        ("verdict", r["verdict"]),
                        ("change is", r.get("change is")),
                        ("degrees of freedom", number(r.get("df"))),
                        ("significant after Holm", r.get("significant")),
                    ]
                ),
            }
            for r in df.to_dict("records")
        ]
    )
