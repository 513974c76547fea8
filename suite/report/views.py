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


CHIP = {  # verdict kind -> its colour (report.css .v-<kind>)
    "LSTM better": "lstm",
    "Transformer better": "transformer",
    "equivalent": "none",
    "both solved": "yes",
    "neither learned": "no",
    "inconclusive": "inconclusive",
}


def family_chip(kind: str, why: str = "") -> Cell:
    cell = chip(kind, CHIP.get(kind, "inconclusive"))
    return _with_title(cell, why) if why else cell


def claim_kind(verdict: str) -> str:
    return {"supported": "yes", "not supported": "no"}.get(verdict, "inconclusive")


def claim_chip(verdict: str) -> Cell:
    return chip(verdict, claim_kind(verdict))


COMPARE = {  # compare.py's verdict -> (its word on the page, its colour)
    "REGRESSED": ("regressed", "no"),
    "improved": ("improved", "yes"),
    "no significant change": ("unchanged", "none"),
    "not testable": ("not testable", "inconclusive"),
    "only in A": ("only in A", "none"),
    "only in B": ("only in B", "none"),
}


def compare_chip(verdict: str) -> Cell:
    word, kind = COMPARE.get(verdict, (verdict, "none"))
    return _with_title(chip(word, kind), verdict)


# ---- the answer ----------------------------------------------------------------------------------


LEAD = {  # verdict kind -> how the lead sentence says it
    "LSTM better": "the LSTM family is better",
    "Transformer better": "the Transformer family is better",
    "equivalent": "the two are equivalent within the stated margin",
    "both solved": "both solve the task",
    "neither learned": "neither learns the task",
    "inconclusive": "the data does not decide",
}


def lead(family: pd.DataFrame) -> str:
    """One sentence: how many task configs end in each verdict, and what the solved ones differ in."""
    if family.empty:
        return ""
    kinds = list(family["verdict"])
    said = [f"{LEAD[k]} on {kinds.count(k)}" for k in LEAD if kinds.count(k)]
    solved = family[family["verdict"] == "both solved"]
    faster = [f for f in solved["faster"] if f in ("LSTM", "Transformer")] if not solved.empty else []
    speed = (
        " Where both solve it, the faster learner: "
        + ", ".join(
            f"{name} on {faster.count(name)}" for name in ("LSTM", "Transformer") if faster.count(name)
        )
        + "."
        if faster
        else ""
    )
    return f"Across {len(family)} task configs of the main comparison: {', '.join(said)}.{speed}"


SUMMARY_TITLES = {
    "difference (95% CI)": "LSTM − Transformer on the raw scale (accuracy), or the ratio LSTM / Transformer "
    "(×) for losses, MSE and bits, or for steps to solve where both solved; Welch's 95% confidence "
    "interval in brackets",
    "seeds": "finished seeds, LSTM vs Transformer",
    "learned (beats baseline)": "does each family's best beat the task's headline baseline? A one-sided test "
    "of its seeds against the baseline",
}


def _side(model: str, mean, std, solved: str) -> Cell:
    """A family's best: its name, mean ± std, and how many seeds solved the task."""
    value = pm(mean, std)
    text = (
        f'<span class="model">{html.escape(model)}</span><br>{html.escape(value.text)}'
        f'<br><span class="muted">solved {html.escape(solved)}</span>'
    )
    return Cell(text, value.sort, safe=True)


def summary(family: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The first screen: per main task config, the best LSTM against the best Transformer, in words."""
    if family.empty:
        return family
    by_model = table.set_index(["experiment", "config", "model"])
    keys = ["experiment", "config"]
    higher = table.drop_duplicates(keys).set_index(keys)["higher_is_better"]
    short, rows = short_configs(list(family["config"])), []
    for r in family.to_dict("records"):
        key = (r["experiment"], r["config"])
        a, b = by_model.loc[(*key, r["best LSTM"])], by_model.loc[(*key, r["best Transformer"])]
        metric = f'<span class="muted">test {html.escape(r["metric"])} {ARROW[bool(higher[key])]}</span>'
        steps = r["compared on"] == "steps to solve"
        rows.append(
            {
                "task config": Cell(
                    f"{_config_link(r['config'], short[r['config']])}<br>{metric}", r["config"], safe=True
                ),
                "verdict": _verdict_cell(r),
                "best LSTM": _side(r["best LSTM"], r["LSTM mean"], a["std"], r["LSTM solved"]),
                "best Transformer": _side(
                    r["best Transformer"], r["Transformer mean"], b["std"], r["Transformer solved"]
                ),
                "difference (95% CI)": _with_title(
                    interval(
                        r["difference"],
                        r["CI low"],
                        r["CI high"],
                        ratio=r["difference is"].startswith("ratio"),
                    ),
                    "steps to solve, LSTM / Transformer" if steps else r["difference is"],
                ),
                "learned (beats baseline)": _two_lines(r["LSTM learned"], r["Transformer learned"]),
                "seeds": r["n"],
                "_task": r["task"],
                "_experiment": r["experiment"],
                "_model": [r["best LSTM"], r["best Transformer"]],
                "_detail": _details(
                    [
                        ("verdict", f"{r['verdict']}: {r['why']}"),
                        ("compared on", r["compared on"]),
                        (
                            "difference is",
                            "steps to solve, ratio LSTM/Transformer" if steps else r["difference is"],
                        ),
                        ("test", r["test"]),
                        ("p (Holm-adjusted)", p_value(r["p (Holm)"]).text),
                        ("equivalence margin", r["margin"]),
                        ("equivalence p (TOST, Holm-adjusted)", p_value(r["equivalence p (Holm)"]).text),
                        ("seeds a side that would decide", r["n to decide"]),
                        ("headline baseline", number(r["baseline"], 4)),
                        (
                            "why training stopped",
                            f"LSTM: {a['stops'] or '?'} · Transformer: {b['stops'] or '?'}",
                        ),
                        (
                            "mean steps trained, LSTM vs Transformer",
                            f"{number(r['LSTM steps'])} vs {number(r['Transformer steps'])}",
                        ),
                        ("experiment", r["experiment"]),
                    ]
                ),
            }
        )
    return pd.DataFrame(rows)


def _two_lines(lstm: str, transformer: str) -> Cell:
    """One line per family, so that the first-screen table fits a 1280 px screen."""
    text = f"LSTM: {html.escape(str(lstm))}<br>Transformer: {html.escape(str(transformer))}"
    return Cell(text, f"{lstm} · {transformer}", safe=True)


def _verdict_cell(r: dict) -> Cell:
    """The verdict word; for "both solved", which learned faster below it."""
    cell = family_chip(r["verdict"], r["why"])
    if r["verdict"] != "both solved" or not r.get("faster"):
        return cell
    faster = {"LSTM": "LSTM faster", "Transformer": "Transformer faster", "equivalent": "as fast"}.get(
        r["faster"], "speed undecided"
    )
    return Cell(f'{cell.text}<br><span class="muted">{html.escape(faster)}</span>', cell.sort, safe=True)


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


def _how_sure(kind: str, why: str) -> Cell:
    """tables.winners' "how sure" as a verdict word, then the test in small print."""
    colour = {"significant": "sure", "inconclusive": "inconclusive"}.get(kind, "none")
    return Cell(f'{chip(kind, colour).text} <span class="muted">{html.escape(why)}</span>', kind, safe=True)


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
                "how sure": _how_sure(r["how sure"], r["how sure why"]),
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
                "solved": f"{r['successes']}/{r['seeds']}",
                "stopped": r.get("stops") or MISSING,
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
                        ("mean steps trained", number(r.get("steps_done"))),
                        ("plateau stops at step", ", ".join(map(str, r.get("plateau_steps") or [])) or None),
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
                "solved": f"{r['successes']}/{r['seeds']}",
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
    configs = _configs(lr)
    return pd.DataFrame(
        [
            {
                "config": configs[r["config"]],
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
                "where": chip(
                    r["where"], {"inside": "yes", "extended": "sure"}.get(r["where"], "inconclusive")
                ),
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
                "whole step GFLOP/s": _gflops(r.get("step_flops_per_s")),
                "% of GEMM rate": _percent(r.get("step_share_of_gemm")),
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
                        ("train step", r.get("step_mode")),
                        (
                            "GEMM rate here (2048² torch.mm)",
                            _gflops(r.get("gemm_flops_per_s")).text + " GFLOP/s",
                        ),
                        ("compile seconds (not in the timings)", number(r.get("compile_seconds"))),
                    ]
                ),
            }
            for r in thr.to_dict("records")
        ]
    )


def step_rates(rates: pd.DataFrame) -> pd.DataFrame:
    """Each training run's whole step (forward, backward, clipping, AdamW) against the GEMM rate."""
    configs = _configs(rates)
    return pd.DataFrame(
        [
            {
                "config": configs[r["config"]],
                "model": r["model"],
                "step": r["step_mode"],
                "threads": r.get("threads"),
                "runs": r["runs"],
                "whole step GFLOP/s": pm(r["step_gflops"], r.get("step_gflops_iqr")),
                "GEMM GFLOP/s": _gflops(r.get("gemm_gflops") * 1e9 if finite(r.get("gemm_gflops")) else None),
                "% of GEMM rate": _percent(r.get("share_of_gemm")),
                "_model": r["model"],
                "_task": _task(r["config"]),
                "_experiment": r["experiment"],
            }
            for r in rates.to_dict("records")
        ]
    )


def _gflops(flops_per_s) -> Cell:
    return Cell(number(flops_per_s / 1e9), flops_per_s / 1e9) if finite(flops_per_s) else Cell(MISSING, None)


def _percent(share) -> Cell:
    return Cell(number(100 * share, 2), 100 * share) if finite(share) else Cell(MISSING, None)


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
                        ("verdict", f"{r['verdict']}: {r.get('why')}"),
                        ("change is", r.get("change is")),
                        ("degrees of freedom", number(r.get("df"))),
                        ("significant after Holm", r.get("significant")),
                    ]
                ),
            }
            for r in df.to_dict("records")
        ]
    )
