"""Results store -> pandas tables for the report (one function per table). Verdicts come from
suite/report/stats.py; nothing here guesses an experiment's purpose from its name (records carry
their `role`)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from suite import tuning
from suite.measure.stability import lr_window, seed_summary
from suite.report import stats, verdicts

RNN = ("lstm", "lstm-variant", "gru", "minlstm", "xlstm")
ATTN = ("transformer", "transformer-hf")


def load(store) -> dict[str, pd.DataFrame]:
    """Records by kind; the last record of a key wins (a retried job replaces its failure). Training
    records of a tuned group keep only the chosen learning rate; every tuning point is under "tuning"."""
    df = store.frame()
    if df.empty:
        return {}
    df = df.drop_duplicates("key", keep="last").reset_index(drop=True)
    for column, default in (("role", None), ("architecture", None), ("extra", None)):
        if column not in df:
            df[column] = default
    df["role"] = [r if isinstance(r, str) else _legacy_role(e) for r, e in zip(df["role"], df["experiment"])]
    df["architecture"] = [
        a if isinstance(a, str) and a else m for a, m in zip(df["architecture"], df["model"])
    ]
    df["config"] = df.apply(config_label, axis=1)
    df["sweep"] = df.apply(lambda row: config_label(row, lr=False), axis=1)  # an lr-sweep's config, all lrs
    kinds = {kind: part.reset_index(drop=True) for kind, part in df.groupby("kind")}
    if "train" in kinds:
        kinds["train"], kinds["tuning"] = _split_tuning(kinds["train"])
    return kinds


def _legacy_role(experiment) -> str:
    """Records written before roles existed: the experiments of the built-in profiles."""
    return {"lr-sweep": "lr-sweep", "ablation": "ablation", "equal-time": "equal-time"}.get(
        experiment, "main"
    )


def _split_tuning(train: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    chosen = tuning.choices(train.to_dict("records"))
    grid = [isinstance(e, dict) and "lr_grid" in e for e in train["extra"]]
    keep, is_tuning = [], []
    for row, tuned in zip(train.to_dict("records"), grid):
        choice = chosen.get(tuning.group_key(row)) if tuned else None
        keep.append(not tuned or (choice is not None and float(row["recipe"]["lr"]) == choice["lr"]))
        is_tuning.append(tuned and row["seed"] == row["extra"].get("tune_seed"))
    train = train.assign(lr_tuned=grid)
    return train[keep].reset_index(drop=True), train[is_tuning].reset_index(drop=True)


def config_label(row, lr: bool = True) -> str:
    """The task and its parameters (and, in an lr-sweep, the learning rate unless lr=False; a wall-clock
    budget): the unit a verdict is about."""
    params = row.get("task_params") or {}
    text = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    recipe = row.get("recipe") or {}
    if lr and row.get("role") == "lr-sweep" and "lr" in recipe:
        text = (text + ", " if text else "") + f"lr={recipe['lr']:g}"
    if recipe.get("seconds"):
        text = (text + ", " if text else "") + f"budget={recipe['seconds']:g}s"
    return f"{row['task']}({text})" if text else row["task"]


def _settings(config: str) -> tuple[str, list[str]]:
    task, _, rest = config.partition("(")
    return task, [s for s in rest.rstrip(")").split(", ") if s]


def short_configs(configs: list[str]) -> dict[str, str]:
    """Each task config named by its task and only the settings that differ between that task's configs
    (for the page; the full label stays in tooltips and CSVs): "adding seq_len=50"."""
    siblings: dict[str, list[list[str]]] = {}
    for task, settings in map(_settings, configs):
        siblings.setdefault(task, []).append(settings)
    out = {}
    for c in configs:
        task, settings = _settings(c)
        out[c] = " ".join([task] + [s for s in settings if any(s not in o for o in siblings[task])])
    return out


def _metric(row) -> float | None:
    test = row.get("test")
    if not isinstance(test, dict):
        return None
    value = test.get(row["primary_metric"])
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _baseline(row) -> float | None:
    base = row.get("baseline")
    value = base.get(row["primary_metric"]) if isinstance(base, dict) else None
    return value if _finite(value) else None


def _solved(row) -> bool:
    """Re-derived, never read from the record's `success` flag: a finished run whose test metric reaches
    the success threshold the record names."""
    value, threshold = _metric(row), row.get("success_threshold")
    if row.get("status") != "ok" or value is None or not _finite(threshold):
        return False
    return value >= threshold if row.get("higher_is_better") else value <= threshold


def flag_disagreements(train: pd.DataFrame) -> pd.DataFrame:
    """Training records whose stored `success` flag disagrees with their metric and threshold: reported,
    not believed."""
    if train is None or train.empty or "success" not in train:
        return pd.DataFrame()
    rows = [
        {
            "config": r["config"],
            "model": r["model"],
            "seed": r["seed"],
            "stored success": bool(r.get("success")),
            "metric": _metric(r),
            "threshold": r.get("success_threshold"),
        }
        for r in train.to_dict("records")
        if r.get("success") is not None and bool(r.get("success")) != _solved(r)
    ]
    return pd.DataFrame(rows)


def _mean(values):
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def _grad(g: pd.DataFrame, key: str):
    return _mean([r.get(key) for r in g["grad_norm"] if isinstance(r, dict)]) if "grad_norm" in g else None


def _col(g: pd.DataFrame, name: str):
    return _mean(list(g[name].dropna())) if name in g else None


def task_table(train: pd.DataFrame, tuning_records: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (experiment, task config, model): the per-seed primary metric (`values`) and its
    statistics, beside the headline baseline (mean over the seeds that ran, for seed-dependent data)."""
    cost = _tuning_cost(tuning_records)
    rows = []
    for (exp, config, model), g in train.groupby(["experiment", "config", "model"], sort=False):
        first = g.iloc[0]
        runs = g.to_dict("records")
        values = [_metric(r) for r in runs]
        solved = [_solved(r) for r in runs]
        s = seed_summary(values)
        ttt_tokens = _col(g, "time_to_threshold_tokens")
        train_flops = first.get("train_flops_per_token")
        rows.append(
            {
                "experiment": exp,
                "role": first["role"],
                "task": first["task"],
                "config": config,
                "sweep": first.get("sweep", config),
                "model": model,
                "family": first.get("model_family"),
                "architecture": first["architecture"],
                "metric": first["primary_metric"],
                "higher_is_better": bool(first["higher_is_better"]),
                "mean": s["mean"],
                "std": s["std"],
                "min": s["min"],
                "max": s["max"],
                "seeds": len(g),
                "finished": s["n"],
                "values": [v for v in values if v is not None],
                "baseline": _mean([_baseline(r) for _, r in g.iterrows()]),
                "threshold": _mean(
                    [r.get("success_threshold") for r in runs if _finite(r.get("success_threshold"))]
                ),
                "baseline_name": first.get("baseline_name"),
                "success_rate": sum(solved) / len(runs),
                "successes": sum(solved),
                "solve_steps": [
                    r["time_to_threshold_steps"] for r in runs if _finite(r.get("time_to_threshold_steps"))
                ],
                "stops": _stops(runs),
                "plateau_steps": [r.get("steps_done") for r in runs if r.get("stop_reason") == "plateau"],
                "steps_done": _mean([r.get("steps_done") for r in runs]),
                "until_solved": bool((first.get("recipe") or {}).get("until_solved")),
                "diverged": int((g["status"] == "diverged").sum()),
                "failed": int((g["status"] == "failed").sum()),
                "grad_norm_median": _grad(g, "median"),
                "grad_norm_p99": _grad(g, "p99"),
                "clip_events": _grad(g, "clip_events"),
                "loss_spikes": _col(g, "loss_spikes"),
                "time_to_threshold_s": _col(g, "time_to_threshold_seconds"),
                "time_to_threshold_tokens": ttt_tokens,
                "flops_to_threshold": train_flops * ttt_tokens
                if ttt_tokens and _finite(train_flops)
                else None,
                "params": _int(first.get("params")),
                "backbone_params": _int(first.get("backbone_params")),
                "lookup_params": _int(first.get("lookup_params")),
                "flops_per_token": first.get("flops_per_token"),
                "train_flops_per_token": train_flops,
                "seq_len": first.get("seq_len"),
                "lr": (first.get("recipe") or {}).get("lr"),
                "lr_tuned": bool(first.get("lr_tuned", False)),
                "tuning_seconds": cost.get((exp, config, model)),
                "budget": _budget(first.get("recipe") or {}),
                "task_family": first.get("task_family"),
            }
        )
    return pd.DataFrame(rows)


def _stops(runs: list[dict]) -> str:
    """Why the runs stopped, counted: "solved 2, plateau 1"."""
    reasons = [r.get("stop_reason") for r in runs if isinstance(r.get("stop_reason"), str)]
    return ", ".join(f"{k} {reasons.count(k)}" for k in dict.fromkeys(reasons))


def _finite(x) -> bool:
    return (
        isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)
    )


def _int(x):
    return int(x) if _finite(x) else None


def _budget(recipe: dict) -> str:
    return f"{recipe['seconds']:g} s" if recipe.get("seconds") else f"{recipe.get('steps', '?')} steps"


def _tuning_cost(tuning_records: pd.DataFrame | None) -> dict:
    if tuning_records is None or tuning_records.empty:
        return {}
    return tuning_records.groupby(["experiment", "config", "model"])["train_seconds"].sum().to_dict()


def tuning_table(tuning_records: pd.DataFrame) -> pd.DataFrame:
    """Per tuned (experiment, task config, model): the grid's validation scores and the chosen LR."""
    if tuning_records is None or tuning_records.empty:
        return pd.DataFrame()
    rows = []
    for (exp, config, model), g in tuning_records.groupby(["experiment", "config", "model"], sort=False):
        choice = tuning.choose(g.to_dict("records"))
        solved = choice.get("solved_steps", {})
        scores = ", ".join(
            f"{lr:g}: {'diverged' if s is None else f'{s:.4g}'}"
            + (f" (solved at step {solved[lr]})" if lr in solved else "")
            for lr, s in sorted(choice["scores"].items())
        )
        grid: list[float] = next(
            (e["lr_grid"] for e in g["extra"] if isinstance(e, dict) and "lr_grid" in e), []
        )
        rows.append(
            {
                "experiment": exp,
                "config": config,
                "model": model,
                "chosen lr": choice["lr"],
                "where": tuning.edge(choice, grid),
                "grid": ", ".join(f"{lr:g}" for lr in grid),
                "validation score per lr": scores,
                "metric": g["primary_metric"].iloc[0],
                "tuning runs": choice["points"],
                "tuning seconds": choice["seconds"],
            }
        )
    return pd.DataFrame(rows)


def lr_protocol(table: pd.DataFrame) -> str:
    """One sentence for the first screen: how the learning rates were set."""
    if table.empty:
        return ""
    compared = table[table["role"] != "lr-sweep"]
    if compared.empty:
        return ""
    tuned = compared[compared["lr_tuned"]]
    if len(tuned) == len(compared):
        return (
            "Learning rate tuned per (task config, model) on the validation split, "
            "the same grid for every model."
        )
    fixed = sorted({f"{lr:g}" for lr in compared[~compared["lr_tuned"]]["lr"].dropna()})
    where = "every model" if tuned.empty else "the untuned experiments"
    return (
        f"Learning rate FIXED at {', '.join(fixed)} for {where} (not tuned per model): "
        "a single learning rate can pick the winner."
    )


# ---- comparisons --------------------------------------------------------------------------------


def representatives(g: pd.DataFrame) -> pd.DataFrame:
    """One row per architecture (twins count once): the best-scoring implementation of each."""
    g = g.dropna(subset=["mean"])
    if g.empty:
        return g
    higher = bool(g["higher_is_better"].iloc[0])
    return g.sort_values("mean", ascending=not higher).drop_duplicates("architecture")


def _test(a: pd.Series, b: pd.Series) -> dict:
    return stats.welch(
        a["values"], b["values"], log=stats.log_scale(a["metric"], bool(a["higher_is_better"]))
    )


def side(row: pd.Series) -> verdicts.Side:
    """A task_table row as one side of a comparison."""
    return verdicts.Side(
        model=row["model"],
        metric=row["metric"],
        higher_is_better=bool(row["higher_is_better"]),
        values=list(row["values"]),
        seeds=int(row["seeds"]),
        solved=int(row["successes"]),
        baseline=row["baseline"] if _finite(row["baseline"]) else None,
        solve_steps=_list(row.get("solve_steps")),
        stops_when_solved=bool(row.get("until_solved", True)),
    )


def _list(value) -> list:
    return list(value) if isinstance(value, (list, tuple, np.ndarray)) else []


def _family_pick(reps: pd.DataFrame) -> pd.Series:
    """A family's representative: the architecture that solved in the fewest steps if any solved in runs
    that stop once solved (what differs between such solvers is speed), else the one with the best mean."""
    solvers = [
        r
        for _, r in reps.iterrows()
        if side(r).solved_majority and side(r).stops_when_solved and _list(r.get("solve_steps"))
    ]
    if solvers:
        return min(solvers, key=lambda r: float(np.median(r["solve_steps"])))
    return reps.iloc[0]


def _learned(result: dict) -> str:
    if result.get("learned") is None:
        return "not testable"
    p = result.get("p")
    return ("yes" if result["learned"] else "no") + (f" (p = {p:.2g})" if p is not None and 0 < p < 1 else "")


def family_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per main-role task config: the best of the LSTM family against the best Transformer, and the
    verdict in suite/report/verdicts.py's vocabulary (`verdict`) with its reason (`why`)."""
    pairs = []
    main = table[table["role"] == "main"] if not table.empty else table
    for (exp, config), g in main.groupby(["experiment", "config"], sort=False):
        reps = representatives(g)
        rnn, att = reps[reps["family"].isin(RNN)], reps[reps["family"].isin(ATTN)]
        if rnn.empty or att.empty:
            continue
        pairs.append((exp, config, _family_pick(rnn), _family_pick(att)))
    judged = verdicts.judge([(side(a), side(b)) for *_, a, b in pairs])
    out = []
    for (exp, config, a, b), v in zip(pairs, judged):
        test = v.welch
        out.append(
            {
                "task": a["task"],
                "config": config,
                "experiment": exp,
                "metric": a["metric"],
                "best LSTM": a["model"],
                "LSTM mean": a["mean"],
                "best Transformer": b["model"],
                "Transformer mean": b["mean"],
                "verdict": v.kind,
                "why": v.why,
                "compared on": v.compared_on,
                "faster": v.faster,
                "difference": test.get("difference"),
                "CI low": test.get("ci_low"),
                "CI high": test.get("ci_high"),
                "difference is": "ratio LSTM/Transformer" if test["scale"] == "log" else "LSTM − Transformer",
                "test": f"{test['test']}, {test['scale']} scale, Holm over {len(judged)} configs",
                "n": f"{test['n_a']} vs {test['n_b']}",
                "p (Holm)": test.get("p_holm"),
                "margin": v.margin,
                "equivalence p (Holm)": v.equivalence.get("p_holm"),
                "n to decide": v.n_to_decide,
                "baseline": a["baseline"],
                "LSTM learned": _learned(v.learned[0]),
                "Transformer learned": _learned(v.learned[1]),
                "LSTM solved": f"{a['successes']}/{a['seeds']}",
                "Transformer solved": f"{b['successes']}/{b['seeds']}",
                "LSTM steps": a.get("steps_done"),
                "Transformer steps": b.get("steps_done"),
            }
        )
    return pd.DataFrame(out)


def _beats(*rows) -> bool | None:
    """Does the best of the rows beat the headline baseline? A one-sided test of its seeds against it
    (stats.versus_baseline), not a comparison of means."""
    first = rows[0]
    if first["baseline"] is None or pd.isna(first["baseline"]):
        return None
    return side(first).learned().get("learned")


def winners(table: pd.DataFrame) -> pd.DataFrame:
    """Best model per (experiment, task config); "how sure" tests it against the best model of
    ANOTHER architecture (never its twin), Holm-corrected over the rows."""
    rows, results = [], []
    for (exp, config), g in table.groupby(["experiment", "config"], sort=False):
        reps = representatives(g)
        if reps.empty:
            continue
        best = reps.iloc[0]
        second = reps.iloc[1] if len(reps) > 1 else None
        result = _test(best, second) if second is not None else None
        if result is not None:
            results.append(result)
        rows.append((exp, config, best, second, result))
    stats.holm(results)
    out = []
    for exp, config, best, second, result in rows:
        if result is None:
            sure, why = "only one architecture", ""
        elif not result.get("testable"):
            sure, why = "inconclusive", result["why"]
        else:
            sure = "significant" if stats.significant(result) else "not significant"
            why = stats.describe(result)
        out.append(
            {
                "experiment": exp,
                "role": best["role"],
                "config": config,
                "metric": best["metric"],
                "best model": best["model"],
                "mean": best["mean"],
                "std": best["std"],
                "runner-up": None if second is None else second["model"],
                "runner-up mean": None if second is None else second["mean"],
                "how sure": sure,
                "how sure why": why,
                "baseline": best["baseline"],
                "baseline name": best["baseline_name"],
                "beats baseline": _beats(best),
                "seeds": int(best["seeds"]),
                "params": best["params"],
                "backbone params": best["backbone_params"],
                "lr": best["lr"],
                "budget": best["budget"],
            }
        )
    return pd.DataFrame(out)


def lr_windows(table: pd.DataFrame) -> pd.DataFrame:
    """Per (task config, model) of the lr-sweep role: the width of the LR window where a MAJORITY of
    at least MIN_N seeds succeed, and the spread of the mean final metric over the grid. Configs of one
    task (two lengths, say) are separate sweeps."""
    sweep = table[table["role"] == "lr-sweep"] if not table.empty else table
    rows = []
    for (config, model), g in sweep.groupby(["sweep", "model"]):
        enough = bool((g["seeds"] >= stats.MIN_N).all())
        points = [(r["lr"], enough and r["successes"] * 2 > r["seeds"]) for _, r in g.iterrows() if r["lr"]]
        w = lr_window(points)
        means = g["mean"].dropna()
        log = stats.log_scale(g["metric"].iloc[0], bool(g["higher_is_better"].iloc[0])) and (means > 0).all()
        spread = (
            float(np.log10(means).std())
            if log and len(means) > 1
            else (float(means.std()) if len(means) > 1 else None)
        )
        rows.append(
            {
                "task": g["task"].iloc[0],
                "config": config,
                "model": model,
                "family": g["family"].iloc[0],
                "architecture": g["architecture"].iloc[0],
                "window_decades": w["decades"] if enough else None,
                "lowest_ok_lr": w["low"],
                "highest_ok_lr": w["high"],
                "grid_points_ok": f"{w['points_ok']}/{w['points']}",
                "seeds_per_point": int(g["seeds"].min()),
                "metric_spread_over_grid": spread,
                "spread_scale": "std of log10(mean)" if log else "std of mean",
                "diverged_runs": int(g["diverged"].sum()),
                "runs": int(g["seeds"].sum()),
            }
        )
    return pd.DataFrame(rows)


def throughput_table(records: pd.DataFrame) -> pd.DataFrame:
    if records is None or records.empty:
        return pd.DataFrame()
    ok = records[records["status"] == "ok"]
    cols = [
        "config",
        "model",
        "backend",
        "timing_threads",
        "seq_len",
        "batch_size",
        "params",
        "backbone_params",
        "flops_per_token",
        "train_flops_per_token",
        "train_tokens_per_s",
        "train_spread_tokens_per_s",
        "inference_tokens_per_s",
        "inference_spread_tokens_per_s",
        "train_peak_bytes",
        "train_step_seconds",
        "train_iqr_seconds",
        "train_repeat_step_seconds",
        "compile_seconds",
        "step_mode",
        "step_flops_per_s",
        "gemm_flops_per_s",
        "step_share_of_gemm",
    ]
    return ok[[c for c in cols if c in ok.columns]].reset_index(drop=True)


def step_rate_table(train: pd.DataFrame) -> pd.DataFrame:
    """The whole training step's rate per (experiment, config, model, step mode): medians over the runs of
    training FLOPs per second in the loop, the GEMM rate of the same processes at the same thread count,
    and the step's share of it (records' StepRate; runs recorded before it existed have none)."""
    if train is None or train.empty or "step_flops_per_s" not in train:
        return pd.DataFrame()
    ok = train[(train["status"] == "ok") & train["step_flops_per_s"].notna()]
    if ok.empty:
        return pd.DataFrame()
    ok = ok.assign(step_mode=ok["step_mode"].fillna("?") if "step_mode" in ok else "?")
    rows = []
    for (experiment, config, model, mode), g in ok.groupby(
        ["experiment", "config", "model", "step_mode"], sort=False
    ):
        rows.append(
            {
                "experiment": experiment,
                "config": config,
                "model": model,
                "step_mode": mode,
                "threads": _one_or_all(g["gemm_threads"]),
                "runs": len(g),
                "step_gflops": g["step_flops_per_s"].median() / 1e9,
                "step_gflops_iqr": (
                    g["step_flops_per_s"].quantile(0.75) - g["step_flops_per_s"].quantile(0.25)
                )
                / 1e9,
                "gemm_gflops": g["gemm_flops_per_s"].median() / 1e9,
                "share_of_gemm": g["step_share_of_gemm"].median(),
                "train_flops_per_token": g["train_flops_per_token"].median(),
                "tokens_per_s": g["train_tokens_per_s_in_loop"].median(),
            }
        )
    return pd.DataFrame(rows)


def _one_or_all(values: pd.Series):
    seen = sorted({int(v) for v in values.dropna()})
    return seen[0] if len(seen) == 1 else seen


def microbench_table(path) -> pd.DataFrame:
    """pytest-benchmark JSON -> ratios against nn.LSTM measured in the same run (and, where the
    benchmark recorded them, achieved GFLOP/s against the machine's GEMM rate)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return pd.DataFrame()
    rows = []
    for b in data.get("benchmarks", []):
        info = b.get("extra_info", {})
        rows.append(
            {
                "impl": info.get("impl", b["name"]),
                "mode": info.get("mode"),
                "B": info.get("B"),
                "T": info.get("T"),
                "I": info.get("I"),
                "H": info.get("H"),
                "threads": info.get("threads"),
                "median_ms": b["stats"]["median"] * 1e3,
                "iqr_ms": b["stats"]["iqr"] * 1e3,
                "gflops": info.get("gflops"),
                "pct_of_gemm": info.get("pct_of_gemm"),
                "backend": info.get("backend"),
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    ref = df[df["impl"] == "nn-lstm"].set_index(["mode", "B", "T", "I", "H"])["median_ms"]
    ref = ref[~ref.index.duplicated()]
    df["x_vs_nn_lstm"] = [
        row.median_ms / ref.get((row.mode, row.B, row.T, row.I, row.H), float("nan"))
        for row in df.itertuples()
    ]
    return df.dropna(axis=1, how="all")


def seed_scores(train: pd.DataFrame) -> pd.DataFrame:
    """One row per finished training run: its test score (the primary metric), for plotting every seed."""
    if train is None or train.empty:
        return pd.DataFrame(
            columns=["experiment", "role", "task", "config", "model", "seed", "seq_len", "lr", "value"]
        )
    rows = [
        {
            "experiment": r["experiment"],
            "role": r["role"],
            "task": r["task"],
            "config": r["config"],
            "model": r["model"],
            "seed": r["seed"],
            "seq_len": r.get("seq_len"),
            "lr": (r.get("recipe") or {}).get("lr"),
            "value": _metric(r),
        }
        for r in train.to_dict("records")
    ]
    return pd.DataFrame(rows).dropna(subset=["value"])
