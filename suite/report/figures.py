"""matplotlib figures for the report. Each function returns a Figure or None (no data)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _fig(w=6.4, h=3.6):
    fig, ax = plt.subplots(figsize=(w, h), dpi=110)
    ax.grid(alpha=0.3)
    return fig, ax


def learning_curves(train: pd.DataFrame, config: str, metric: str):
    g = train[(train["config"] == config) & (train["status"] != "failed")]
    if g.empty:
        return None
    fig, ax = _fig()
    for model, runs in g.groupby("model"):
        curves = [pd.DataFrame(c).set_index("step")[f"val_{metric}"] for c in runs["curve"] if isinstance(c, list) and c]
        if not curves:
            continue
        frame = pd.concat(curves, axis=1)
        med = frame.median(axis=1)
        ax.plot(med.index, med.values, label=f"{model} (n={frame.shape[1]})")
        ax.fill_between(med.index, frame.min(axis=1), frame.max(axis=1), alpha=0.15)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"{config}: median and min-max band over seeds", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def metric_vs_length(table: pd.DataFrame, task: str):
    g = table[(table["task"] == task) & (table["role"] == "main")]
    if g["seq_len"].nunique() < 2:
        return None
    fig, ax = _fig()
    for model, rows in g.groupby("model"):
        rows = rows.sort_values("seq_len")
        ax.errorbar(rows["seq_len"], rows["mean"], yerr=rows["std"].fillna(0), marker="o", capsize=3, label=model)
    base = g.groupby("seq_len")["baseline"].first()
    ax.plot(base.index, base.values, "k--", label="baseline")
    ax.set_xscale("log")
    ax.set_xlabel("sequence length")
    ax.set_ylabel(g["metric"].iloc[0])
    ax.set_title(f"{task}: {g['metric'].iloc[0]} against length (mean ± std over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def forecast_plot(train: pd.DataFrame, config: str):
    g = train[(train["config"] == config) & train["forecast_example"].notna()] if "forecast_example" in train else train.iloc[0:0]
    g = g[g["seed"] == g["seed"].min()] if not g.empty else g
    if g.empty:
        return None
    fig, ax = _fig()
    ex0 = g.iloc[0]["forecast_example"]
    L, H = len(ex0["lookback"]), len(ex0["truth"])
    ax.plot(range(L), ex0["lookback"], color="gray", label="lookback")
    ax.plot(range(L, L + H), ex0["truth"], color="black", lw=2, label="ground truth")
    for _, r in g.iterrows():
        ax.plot(range(L, L + H), r["forecast_example"]["prediction"], label=r["model"])
    ax.set_xlabel("time step (normalised scale, last channel)")
    ax.set_title(f"{config}: first test window, seed {int(g['seed'].min())}", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def lr_sensitivity(table: pd.DataFrame):
    sweep = table[table["role"] == "lr-sweep"]
    if sweep.empty:
        return None
    fig, ax = _fig()
    for (task, model), g in sweep.groupby(["task", "model"]):
        g = g.sort_values("lr")
        ax.errorbar(g["lr"], g["mean"], yerr=g["std"].fillna(0), marker="o", capsize=3, label=f"{model} ({task})")
        base = g["baseline"].iloc[0]
    ax.axhline(base, color="k", ls="--", label="baseline")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(sweep["metric"].iloc[0])
    ax.set_title("learning-rate sensitivity (mean ± std over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def grad_norms(train: pd.DataFrame):
    if "grad_norm" not in train:
        return None
    edges = np.logspace(-3, 3, 25)
    fig, ax = _fig()
    found = False
    for family, g in train.groupby("model_family"):
        hists = [np.asarray(x["hist"]) for x in g["grad_norm"] if isinstance(x, dict) and x.get("hist")]
        if hists:
            found = True
            total = np.sum(hists, axis=0)
            ax.step(edges[:-1], total / total.sum(), where="post", label=family)
    if not found:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("gradient norm before clipping")
    ax.set_ylabel("fraction of steps")
    ax.set_title("gradient-norm distribution by model family (all runs)", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def throughput_bars(thr: pd.DataFrame):
    if thr.empty:
        return None
    configs = list(thr["config"].unique())
    models = list(thr["model"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    width = 0.8 / max(len(models), 1)
    for ax, kind in zip(axes, ("train", "inference")):
        for i, model in enumerate(models):
            rows = thr[thr["model"] == model].set_index("config").reindex(configs)
            ax.bar(np.arange(len(configs)) + i * width, rows[f"{kind}_tokens_per_s"], width,
                   yerr=rows[f"{kind}_spread_tokens_per_s"], capsize=2, label=model)
        ax.set_xticks(np.arange(len(configs)) + 0.4 - width / 2)
        ax.set_xticklabels(configs, rotation=20, ha="right", fontsize=7)
        ax.set_ylabel(f"{kind} tokens/s")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    fig.suptitle("throughput (median; error bar: IQR-derived spread)", fontsize=9)
    fig.tight_layout()
    return fig


def latency_plot(lat: pd.DataFrame | None):
    if lat is None or lat.empty:
        return None
    ok = lat[lat["status"] == "ok"]
    if ok.empty:
        return None
    fig, ax = _fig()
    for model, g in ok.groupby("model"):
        g = g.sort_values("context")
        ax.errorbar(g["context"], g["latency_seconds"] * 1e3, yerr=g["latency_iqr_seconds"] * 1e3, marker="o", capsize=3, label=model)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("context length (positions already decoded)")
    ax.set_ylabel("ms per generated token")
    ax.set_title("per-token decoding latency: LSTM carried state vs Transformer KV cache", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def scaling_plot(sc: pd.DataFrame | None):
    if sc is None or sc.empty:
        return None
    ok = sc[sc["status"] == "ok"]
    if ok.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    for model, g in ok.groupby("model"):
        g = g.sort_values("seq_len")
        axes[0].plot(g["seq_len"], g["train_seconds"] * 1e3, marker="o", label=model)
        axes[1].plot(g["seq_len"], g["peak_bytes"] / 2**20, marker="o", label=model)
    for ax, label in zip(axes, ("forward+backward ms", "peak tensor memory (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("sequence-length scaling (log-log: slope 1 = linear, 2 = quadratic)", fontsize=9)
    fig.tight_layout()
    return fig


def microbench_plot(mb: pd.DataFrame):
    if mb.empty:
        return None
    std = mb[(mb["T"] == 128) & (mb["H"] == 128)]
    if std.empty:
        return None
    fig, ax = _fig()
    pivot = std.pivot_table(index="impl", columns="mode", values="x_vs_nn_lstm")
    pivot.plot.barh(ax=ax)
    ax.axvline(1.0, color="k", lw=1)
    ax.set_xlabel("time relative to nn.LSTM (lower is faster)")
    ax.set_title("LSTM implementations at B=32, T=128, I=64, H=128 (pytest-benchmark)", fontsize=9)
    return fig
