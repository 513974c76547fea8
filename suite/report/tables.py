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
from suite.report import stats

RNN = ("lstm", "lstm-variant", "gru", "minlstm")
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


def config_label(row) -> str:
    params = row.get("task_params") or {}
    text = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    recipe = row.get("recipe") or {}
    if row.get("role") == "lr-sweep" and "lr" in recipe:
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
        values = [_metric(r) for _, r in g.iterrows()]
        s = seed_summary(values)
        ttt_tokens = _col(g, "time_to_threshold_tokens")
        train_flops = first.get("train_flops_per_token")
        rows.append(
            {
                "experiment": exp,
                "role": first["role"],
                "task": first["task"],
                "config": config,
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
                "baseline_name": first.get("baseline_name"),
                "success_rate": float(g["success"].fillna(False).astype(bool).mean()),
                "successes": int(g["success"].fillna(False).astype(bool).sum()),
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
        scores = ", ".join(
            f"{lr:g}: {'diverged' if s is None else f'{s:.4g}'}" for lr, s in sorted(choice["scores"].items())
        )
        rows.append(
            {
                "experiment": exp,
                "config": config,
                "model": model,
                "chosen lr": choice["lr"],
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


def _representatives(g: pd.DataFrame) -> pd.DataFrame:
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


def _verdict(result: dict, higher: bool, a_name: str, b_name: str) -> str:
    if not result.get("testable"):
        return f"inconclusive ({result['why']})"
    if stats.significant(result):
        return f"{a_name} better" if stats.a_is_better(result, higher) else f"{b_name} better"
    return f"no detectable difference (n = {result['n_a']} vs {result['n_b']})"


def family_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per main-role task config: the best of the LSTM family against the best Transformer, Welch's
    test on the right scale, Holm-corrected over the configs, and a verdict in words."""
    rows, results = [], []
    main = table[table["role"] == "main"] if not table.empty else table
    for (exp, config), g in main.groupby(["experiment", "config"], sort=False):
        reps = _representatives(g)
        rnn, att = reps[reps["family"].isin(RNN)], reps[reps["family"].isin(ATTN)]
        if rnn.empty or att.empty:
            continue
        a, b = rnn.iloc[0], att.iloc[0]
        result = _test(a, b)
        results.append(result)
        rows.append((exp, config, a, b, result))
    stats.holm(results)
    out = []
    for exp, config, a, b, result in rows:
        higher = bool(a["higher_is_better"])
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
                "difference": result.get("difference"),
                "CI low": result.get("ci_low"),
                "CI high": result.get("ci_high"),
                "difference is": "ratio LSTM/Transformer"
                if result["scale"] == "log"
                else "LSTM − Transformer",
                "test": f"{result['test']}, {result['scale']} scale, Holm over {len(results)} configs",
                "n": f"{result['n_a']} vs {result['n_b']}",
                "p (Holm)": result.get("p_holm"),
                "verdict": _verdict(result, higher, "LSTM", "Transformer"),
                "baseline": a["baseline"],
                "beats baseline": _beats(a, b),
            }
        )
    return pd.DataFrame(out)


def _beats(*rows) -> bool | None:
    """Does the better of the rows beat the headline baseline (on the mean)?"""
    first = rows[0]
    if first["baseline"] is None or pd.isna(first["baseline"]):
        return None
    higher = bool(first["higher_is_better"])
    best = max(r["mean"] for r in rows) if higher else min(r["mean"] for r in rows)
    return best > first["baseline"] if higher else best < first["baseline"]


def winners(table: pd.DataFrame) -> pd.DataFrame:
    """Best model per (experiment, task config); "how sure" tests it against the best model of
    ANOTHER architecture (never its twin), Holm-corrected over the rows."""
    rows, results = [], []
    for (exp, config), g in table.groupby(["experiment", "config"], sort=False):
        reps = _representatives(g)
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
            sure = "only one architecture"
        elif not result.get("testable"):
            sure = f"inconclusive ({result['why']})"
        else:
            sure = (
                "significant" if stats.significant(result) else "not significant"
            ) + f": {stats.describe(result)}"
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
    at least MIN_N seeds succeed, and the spread of the mean final metric over the grid."""
    sweep = table[table["role"] == "lr-sweep"] if not table.empty else table
    rows = []
    for (task, model), g in sweep.groupby(["task", "model"]):
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
                "task": task,
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
    ]
    return ok[[c for c in cols if c in ok.columns]].reset_index(drop=True)


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
