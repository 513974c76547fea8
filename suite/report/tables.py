"""Results store -> pandas tables for the report (one function per table)."""

from __future__ import annotations

import json
import math

import pandas as pd

from suite.measure.stability import lr_window, seed_summary


def load(store) -> dict[str, pd.DataFrame]:
    """Records by kind; the last record of a key wins (a retried job replaces its failure)."""
    df = store.frame()
    if df.empty:
        return {}
    df = df.drop_duplicates("key", keep="last")
    df["config"] = df.apply(config_label, axis=1)
    return {kind: part.reset_index(drop=True) for kind, part in df.groupby("kind")}


def config_label(row) -> str:
    params = row.get("task_params") or {}
    text = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    train = row.get("train") or {}
    if row.get("experiment") not in (None, "main") and "lr" in train:
        text = (text + ", " if text else "") + f"lr={train['lr']:g}"
    if train.get("seconds"):
        text = (text + ", " if text else "") + f"budget={train['seconds']:g}s"
    return f"{row['task']}({text})" if text else row["task"]


def _metric(row) -> float | None:
    test = row.get("test")
    if not isinstance(test, dict):
        return None
    value = test.get(row["primary_metric"])
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def task_table(train: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, task config, model): seed statistics of the primary metric."""
    rows = []
    for (exp, config, model), g in train.groupby(["experiment", "config", "model"], sort=False):
        first = g.iloc[0]
        values = [_metric(r) for _, r in g.iterrows()]
        s = seed_summary(values)
        gn = [r["grad_norm"]["median"] for _, r in g.iterrows() if isinstance(r.get("grad_norm"), dict) and r["grad_norm"].get("median") is not None]
        p99 = [r["grad_norm"]["p99"] for _, r in g.iterrows() if isinstance(r.get("grad_norm"), dict) and r["grad_norm"].get("p99") is not None]
        baseline = first["baseline"].get(first["primary_metric"]) if isinstance(first.get("baseline"), dict) else None
        rows.append({
            "experiment": exp, "task": first["task"], "config": config, "model": model, "family": first.get("model_family"),
            "metric": first["primary_metric"], "higher_is_better": bool(first["higher_is_better"]),
            "mean": s["mean"], "std": s["std"], "min": s["min"], "max": s["max"], "seeds": len(g), "finished": s["n"],
            "baseline": baseline, "baseline_name": first.get("baseline_name"),
            "success_rate": float(g["success"].fillna(False).astype(bool).mean()),
            "diverged": int((g["status"] == "diverged").sum()), "failed": int((g["status"] == "failed").sum()),
            "grad_norm_median": _mean(gn), "grad_norm_p99": _mean(p99),
            "clip_events": _mean([r["grad_norm"].get("clip_events") for _, r in g.iterrows() if isinstance(r.get("grad_norm"), dict)]),
            "loss_spikes": _mean(list(g["loss_spikes"].dropna())) if "loss_spikes" in g else None,
            "time_to_threshold_s": _mean(list(g["time_to_threshold_seconds"].dropna())) if "time_to_threshold_seconds" in g else None,
            "params": int(first["params"]) if pd.notna(first.get("params")) else None,
            "flops_per_token": first.get("flops_per_token"), "seq_len": first.get("seq_len"),
            "lr": (first.get("train") or {}).get("lr"), "budget": _budget(first.get("train") or {}),
            "task_family": first.get("task_family"),
        })
    return pd.DataFrame(rows)


def _budget(train: dict) -> str:
    return f"{train['seconds']:g} s" if train.get("seconds") else f"{train.get('steps', '?')} steps"


def _mean(values):
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def winners(table: pd.DataFrame) -> pd.DataFrame:
    """Best model per (experiment, task config), and how sure: gap to the runner-up in seed stds."""
    rows = []
    for (exp, config), g in table.groupby(["experiment", "config"], sort=False):
        g = g.dropna(subset=["mean"])
        if g.empty:
            continue
        higher = bool(g["higher_is_better"].iloc[0])
        g = g.sort_values("mean", ascending=not higher)
        best = g.iloc[0]
        second = g.iloc[1] if len(g) > 1 else None
        gap = abs(best["mean"] - second["mean"]) if second is not None else None
        spread = max(best["std"] or 0, second["std"] or 0) if second is not None else None
        if second is None:
            sure = "only one model"
        elif gap == 0:
            sure = "tie"
        elif best["seeds"] < 2:
            sure = "one seed: no spread to judge by"
        elif spread == 0 or gap > 2 * spread:
            sure = "clear (gap > 2 seed std)"
        elif gap > spread:
            sure = "likely (gap > 1 seed std)"
        else:
            sure = "within seed noise"
        beats = None
        if best["baseline"] is not None:
            beats = best["mean"] > best["baseline"] if higher else best["mean"] < best["baseline"]
        rows.append({"experiment": exp, "config": config, "metric": best["metric"], "best model": best["model"],
                     "mean": best["mean"], "std": best["std"], "runner-up": None if second is None else second["model"],
                     "runner-up mean": None if second is None else second["mean"], "how sure": sure,
                     "trivial baseline": best["baseline"], "beats baseline": beats, "seeds": int(best["seeds"]),
                     "params": best["params"], "budget": best["budget"]})
    return pd.DataFrame(rows)


def lr_windows(table: pd.DataFrame) -> pd.DataFrame:
    sweep = table[table["experiment"].str.contains("lr", case=False)]
    rows = []
    for (task, model), g in sweep.groupby(["task", "model"]):
        points = [(r["lr"], r["success_rate"] >= 0.5) for _, r in g.iterrows() if r["lr"]]
        w = lr_window(points)
        rows.append({"task": task, "model": model, "family": g["family"].iloc[0], "window_decades": w["decades"],
                     "lowest_ok_lr": w["low"], "highest_ok_lr": w["high"], "grid_points_ok": f"{w['points_ok']}/{w['points']}",
                     "diverged_runs": int(g["diverged"].sum()), "runs": int(g["seeds"].sum())})
    return pd.DataFrame(rows)


def throughput_table(records: pd.DataFrame) -> pd.DataFrame:
    if records is None or records.empty:
        return pd.DataFrame()
    ok = records[records["status"] == "ok"]
    cols = ["config", "model", "backend", "seq_len", "batch_size", "params", "flops_per_token", "train_tokens_per_s",
            "train_spread_tokens_per_s", "inference_tokens_per_s", "inference_spread_tokens_per_s", "train_peak_bytes",
            "train_step_seconds", "train_iqr_seconds", "train_repeat_step_seconds", "compile_seconds"]
    return ok[[c for c in cols if c in ok.columns]].reset_index(drop=True)


def microbench_table(path) -> pd.DataFrame:
    """pytest-benchmark JSON -> ratios against nn.LSTM measured in the same run."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return pd.DataFrame()
    rows = []
    for b in data.get("benchmarks", []):
        info = b.get("extra_info", {})
        rows.append({"impl": info.get("impl", b["name"]), "mode": info.get("mode"), "B": info.get("B"), "T": info.get("T"),
                     "I": info.get("I"), "H": info.get("H"), "median_ms": b["stats"]["median"] * 1e3,
                     "iqr_ms": b["stats"]["iqr"] * 1e3})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    ref = df[df["impl"] == "nn-lstm"].set_index(["mode", "B", "T", "I", "H"])["median_ms"]
    df["x_vs_nn_lstm"] = [row.median_ms / ref.get((row.mode, row.B, row.T, row.I, row.H), float("nan")) for row in df.itertuples()]
    return df
