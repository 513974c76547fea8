"""The report's figures as plain specs (Figure -> Panel -> Trace), built from the report's pandas tables
and the raw records. suite/report/render.py draws each spec twice: an interactive plotly chart in the
page and a PNG beside it. Each function returns a Figure, or None when the run holds no data for it.
The traces of one model share a legend group (a legend click toggles the model) and one colour in the
whole report; hover text names the model, the seed and the exact value. Captions say what was run."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from suite.report.tables import ATTN, RNN, short_configs

# neighbours in each list differ in hue and lightness: models sorted by name get them in turn
RECURRENT = [
    "#1f77b4",
    "#2ca02c",
    "#17becf",
    "#9467bd",
    "#7cb342",
    "#0b3c75",
    "#00897b",
    "#c5b0d5",
    "#1b5e20",
    "#6baed6",
    "#a1d99b",
    "#607d8b",
    "#7b1fa2",
]
ATTENTION = ["#d62728", "#ff7f0e", "#e377c2", "#8c564b", "#bcbd22", "#f4a582"]
OTHER = ["#7f7f7f", "#9467bd", "#c49c94", "#636363"]
BASELINE = "#444444"


@dataclass
class Trace:
    name: str
    x: list
    y: list
    kind: str = "line"  # line | markers | lines+markers | bar | hbar | band | step
    group: str | None = None  # legend group: its traces toggle together (a model's name for model traces)
    color: str | None = None
    err: list | None = None  # symmetric error bars
    err_axis: str = "y"  # the axis they lie along ("x" for horizontal bars and strips)
    high: list | None = None  # a band's upper edge (y is its lower edge)
    hover: list[str] | None = None
    legend: bool = True
    faint: bool = False
    dash: bool = False


@dataclass
class Panel:
    traces: list[Trace]
    xlabel: str = ""
    ylabel: str = ""
    title: str = ""
    xlog: bool = False
    ylog: bool = False


@dataclass
class Figure:
    name: str  # file stem of the PNG export
    title: str  # what it shows
    caption: str  # what was run (device, dtype, threads, seeds, budget) and how to read it
    panels: list[Panel] = field(default_factory=list)


class Colors:
    """One colour per model for the whole report: cool hues for recurrent models, warm for attention.
    `families` maps model -> family in order of importance: the first models get the most distinct hues."""

    def __init__(self, families: dict[str, str | None]):
        pools = {"rnn": iter(RECURRENT * 3), "attn": iter(ATTENTION * 3), "other": iter(OTHER * 5)}
        self.of = {
            m: next(pools["rnn" if f in RNN else "attn" if f in ATTN else "other"])
            for m, f in families.items()
        }

    def __call__(self, model: str) -> str:
        return self.of.get(model, OTHER[0])

    def groups(self, df: pd.DataFrame):
        """df's rows per model, in the report's model order (so every legend lists models alike)."""
        rank = {m: i for i, m in enumerate(self.of)}
        return sorted(df.groupby("model"), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


def _g(x) -> str:
    return f"{x:.4g}"


def _zip(df: pd.DataFrame, *cols):
    return zip(*(df[c] for c in cols))


# ---- captions: what was run ----------------------------------------------------------------------


def _env(records: pd.DataFrame) -> dict:
    if "env" not in records:
        return {}
    envs = records["env"].dropna()
    return envs.iloc[0] if len(envs) else {}


def _denormals(flushed) -> str:
    """The run's denormal setting (suite.models.float_env.set_flush_denormals), for a caption."""
    return ", denormals flushed" if flushed is True else ", IEEE denormals" if flushed is False else ""


def run_caption(records: pd.DataFrame, *, budget: bool = True) -> str:
    """Device, dtype, threads, seeds and budget of a group of training records, in one line."""
    if records is None or records.empty:
        return ""
    env = _env(records)
    parts = [
        f"{env.get('device', '?')} ({env.get('device_name', '?')}), {env.get('dtype', '?')}, "
        f"{env.get('threads', '?')} threads" + _denormals(env.get("flush_denormals"))
    ]
    if "seed" in records:
        seeds = sorted({int(s) for s in records["seed"].dropna()})
        parts.append(f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})")
    if budget and "recipe" in records:
        parts.append(_budget([t for t in records["recipe"] if isinstance(t, dict)]))
    return "; ".join(p for p in parts if p)


def _budget(recipes: list[dict]) -> str:
    if not recipes:
        return ""
    t = recipes[0]
    amount = f"{t['seconds']:g} s per run" if t.get("seconds") else f"{t.get('steps', '?')} steps"
    size = f"batch {t['batch_size']}" if t.get("batch_size") else ""
    lrs = sorted({float(x["lr"]) for x in recipes if x.get("lr") is not None})
    lr = f"lr {', '.join(f'{v:g}' for v in lrs)}" if lrs else ""
    return ", ".join(p for p in (amount, size, lr) if p)


def timing_caption(records: pd.DataFrame) -> str:
    """Device, dtype and the threads timings ran with (throughput, latency and scaling records)."""
    if records is None or records.empty:
        return ""
    env = _env(records)
    counts, mixed = _thread_counts(records.get("timing_threads", pd.Series(dtype=object)))
    recipes = [t for t in records.get("recipe", []) if isinstance(t, dict)]
    sizes = sorted({t["batch_size"] for t in recipes if "batch_size" in t})
    return (
        f"{env.get('device', '?')} ({env.get('device_name', '?')}), {env.get('dtype', '?')}, timed with "
        f"{', '.join(map(str, sorted(counts))) or env.get('threads', '?')} thread(s)"
        + (" (the count changed inside a timed job)" if mixed else "")
        + (f", batch {', '.join(map(str, sizes))}" if sizes else "")
    )


def _thread_counts(column: pd.Series) -> tuple[set[int], bool]:
    """Every thread count the timed calls saw, and whether one job's calls saw several: timing_threads
    is an int per record, or the list of counts where they differed (records.Throughput)."""
    counts: set[int] = set()
    mixed = False
    for value in column:
        if isinstance(value, (list, tuple, np.ndarray)):
            counts |= {int(t) for t in value}
            mixed = True
        elif value is not None and not pd.isna(value):
            counts.add(int(value))
    return counts, mixed


# ---- training ------------------------------------------------------------------------------------


def _curve(c, metric: str, x: str) -> pd.Series | None:
    frame = pd.DataFrame(c) if isinstance(c, list) and c else None
    if frame is None or f"val_{metric}" not in frame or x not in frame:
        return None
    return frame.set_index(x)[f"val_{metric}"].dropna()


def learning_curves(
    train: pd.DataFrame, config: str, metric: str, colors: Colors, *, x: str = "step", name: str = "curve"
) -> Figure | None:
    """Validation metric against steps: per model the median over seeds, a min-max band and each seed as a
    faint line (hover it for the seed). Against seconds (equal-time runs): the seeds alone."""
    g = train[(train["config"] == config) & (train["status"] != "failed")]
    traces = []
    for model, runs in colors.groups(g):
        curves = {
            int(s): c
            for s, c in ((s, _curve(c, metric, x)) for s, c in _zip(runs, "seed", "curve"))
            if c is not None and len(c)
        }
        if not curves:
            continue
        color, by_step = colors(model), x == "step"
        if by_step:
            frame = pd.concat(curves, axis=1).sort_index()
            med = frame.median(axis=1)
            traces.append(
                Trace(
                    f"{model} band",
                    list(med.index),
                    list(frame.min(axis=1)),
                    "band",
                    model,
                    color,
                    high=list(frame.max(axis=1)),
                    legend=False,
                )
            )
            traces.append(
                Trace(
                    model,
                    list(med.index),
                    list(med),
                    "line",
                    model,
                    color,
                    hover=[
                        f"{model}: median of {frame.shape[1]} seeds<br>step {s}: {_g(v)}"
                        for s, v in med.items()
                    ],
                )
            )
        for seed, c in curves.items():  # by seconds, the first seed's line carries the model's legend entry
            traces.append(
                Trace(
                    model if not by_step else f"{model} seed {seed}",
                    list(c.index),
                    list(c),
                    "line" if by_step else "lines+markers",
                    model,
                    color,
                    faint=by_step,
                    legend=not by_step and seed == min(curves),
                    hover=[f"{model}, seed {seed}<br>{x} {_g(s)}: {_g(v)}" for s, v in c.items()],
                )
            )
    if not traces:
        return None
    how = (
        "line: median over seeds; band: min to max; faint lines: single seeds"
        if x == "step"
        else "a line per seed"
    )
    xlabel = "training step" if x == "step" else "training seconds"
    return Figure(
        f"{name}_{config}",
        f"{config}: validation {metric} during training",
        f"{run_caption(g)}. {how}.",
        [Panel(traces, xlabel, f"validation {metric}")],
    )


def _seed_dots(scores: pd.DataFrame, x: str, model: str, colors: Colors, metric: str) -> list[Trace]:
    if scores.empty:
        return []
    return [
        Trace(
            f"{model} seeds",
            list(scores[x]),
            list(scores["value"]),
            "markers",
            model,
            colors(model),
            faint=True,
            legend=False,
            hover=[
                f"{model}, seed {int(s)}<br>{x} {_g(v)}: {metric} {_g(y)}"
                for s, v, y in _zip(scores, "seed", x, "value")
            ],
        )
    ]


def _mean_line(model: str, rows: pd.DataFrame, x: str, colors: Colors, metric: str, xname: str) -> Trace:
    std = rows["std"].fillna(0)
    return Trace(
        model,
        list(rows[x]),
        list(rows["mean"]),
        "lines+markers",
        model,
        colors(model),
        list(std),
        hover=[
            f"{model}, {xname} {_g(v)}<br>{metric} {_g(m)} ± {_g(s)}; {ok}/{n} seeds succeeded"
            for v, m, s, ok, n in zip(rows[x], rows["mean"], std, rows["successes"], rows["seeds"])
        ],
    )


def _baseline(xs: list, value: float) -> Trace:
    return Trace(
        "baseline",
        xs,
        [value] * len(xs),
        "line",
        color=BASELINE,
        dash=True,
        hover=[f"headline baseline {_g(value)}"] * len(xs),
    )


def metric_vs_length(
    table: pd.DataFrame, scores: pd.DataFrame, task: str, colors: Colors, train: pd.DataFrame
) -> Figure | None:
    """Test metric against sequence length (main role): mean ± std per model, each seed a dot."""
    g = table[(table["task"] == task) & (table["role"] == "main")]
    if g["seq_len"].nunique() < 2:
        return None
    metric, traces = g["metric"].iloc[0], []
    for model, rows in colors.groups(g):
        traces.append(_mean_line(model, rows.sort_values("seq_len"), "seq_len", colors, metric, "T ="))
        mine = scores[(scores["task"] == task) & (scores["role"] == "main") & (scores["model"] == model)]
        traces += _seed_dots(mine, "seq_len", model, colors, metric)
    base = g.groupby("seq_len")["baseline"].first().dropna()
    if len(base):
        traces.append(
            Trace(
                "baseline",
                list(base.index),
                list(base),
                "line",
                color=BASELINE,
                dash=True,
                hover=[f"headline baseline at T = {t}: {_g(v)}" for t, v in base.items()],
            )
        )
    runs = train[(train["task"] == task) & (train["role"] == "main")]
    return Figure(
        f"length_{task}",
        f"{task}: test {metric} against sequence length",
        f"{run_caption(runs)}. Mean ± std over seeds; dots: single seeds; dashed: headline baseline.",
        [Panel(traces, "sequence length T", f"test {metric}", xlog=True)],
    )


def seed_strip(
    scores: pd.DataFrame, table: pd.DataFrame, config: str, role: str, colors: Colors, train: pd.DataFrame
) -> Figure | None:
    """Every seed's test score per model of one task config (ablation, equal-time), best model on top."""
    g = table[(table["config"] == config) & (table["role"] == role)].dropna(subset=["mean"])
    if g.empty:
        return None
    metric, higher = g["metric"].iloc[0], bool(g["higher_is_better"].iloc[0])
    g = g.sort_values("mean", ascending=higher)  # plotly puts the first category at the bottom
    mine = scores[(scores["config"] == config) & (scores["role"] == role)]
    traces = []
    for r in g.to_dict("records"):
        m, std = r["model"], r["std"] if pd.notna(r["std"]) else 0.0
        seeds = mine[mine["model"] == m]
        traces.append(
            Trace(
                m,
                [r["mean"]],
                [m],
                "markers",
                m,
                colors(m),
                [std],
                "x",
                hover=[f"{m}: mean {_g(r['mean'])} ± {_g(std)} over {r['finished']} seeds"],
            )
        )
        traces.append(
            Trace(
                f"{m} seeds",
                list(seeds["value"]),
                [m] * len(seeds),
                "markers",
                m,
                colors(m),
                faint=True,
                legend=False,
                hover=[f"{m}, seed {int(s)}: {_g(v)}" for s, v in _zip(seeds, "seed", "value")],
            )
        )
    base = g["baseline"].dropna()
    if len(base):
        traces.append(
            Trace(
                "baseline",
                [base.iloc[0]] * 2,
                [g["model"].iloc[0], g["model"].iloc[-1]],
                "line",
                color=BASELINE,
                dash=True,
                hover=[f"headline baseline {_g(base.iloc[0])}"] * 2,
            )
        )
    runs = train[(train["config"] == config) & (train["role"] == role)]
    better = "higher" if higher else "lower"
    return Figure(
        f"seeds_{role}_{config}",
        f"{config}: test {metric} of every seed",
        f"{run_caption(runs)}. Large dot: mean ± std; small dots: single seeds; {better} is better.",
        [Panel(traces, f"test {metric}")],
    )


def forecast(train: pd.DataFrame, config: str, colors: Colors) -> Figure | None:
    """One test window: the lookback, the ground truth and each model's prediction (first seed)."""
    if "forecast_example" not in train:
        return None
    g = train[(train["config"] == config) & train["forecast_example"].notna()]
    if g.empty:
        return None
    g = g[g["seed"] == g["seed"].min()]
    ex = g.iloc[0]["forecast_example"]
    n = len(ex["lookback"])
    back, ahead = list(range(n)), list(range(n, n + len(ex["truth"])))
    traces = [
        Trace("lookback", back, list(ex["lookback"]), color="#999999"),
        Trace("ground truth", ahead, list(ex["truth"]), color="#000000"),
    ]
    for _, r in g.iterrows():
        pred = list(r["forecast_example"]["prediction"])
        traces.append(
            Trace(
                r["model"],
                ahead,
                pred,
                "line",
                r["model"],
                colors(r["model"]),
                hover=[
                    f"{r['model']}, step {t}: {_g(v)} (truth {_g(y)})"
                    for t, v, y in zip(ahead, pred, ex["truth"])
                ],
            )
        )
    return Figure(
        f"forecast_{config}",
        f"{config}: prediction against ground truth, first test window",
        f"{run_caption(g)}. Seed {int(g['seed'].min())}; normalised scale, last channel.",
        [Panel(traces, "time step", "value (normalised)")],
    )


def lr_sensitivity(
    table: pd.DataFrame, scores: pd.DataFrame, train: pd.DataFrame, colors: Colors
) -> Figure | None:
    """Test metric against learning rate (lr-sweep role): mean ± std per model, each seed a dot, a panel
    per task."""
    sweep = table[table["role"] == "lr-sweep"]
    if sweep.empty:
        return None
    panels = []
    for task, t in sweep.groupby("task", sort=False):
        metric, traces = t["metric"].iloc[0], []
        for model, g in colors.groups(t):
            traces.append(_mean_line(model, g.sort_values("lr"), "lr", colors, metric, "lr"))
            mine = scores[
                (scores["task"] == task) & (scores["role"] == "lr-sweep") & (scores["model"] == model)
            ]
            traces += _seed_dots(mine, "lr", model, colors, metric)
        if t["baseline"].notna().any():
            traces.append(_baseline([t["lr"].min(), t["lr"].max()], t["baseline"].dropna().iloc[0]))
        panels.append(Panel(traces, "learning rate", f"test {metric}", title=task, xlog=True))
    return Figure(
        "lr_sensitivity",
        "Learning-rate sensitivity",
        f"{run_caption(train[train['role'] == 'lr-sweep'])}. Mean ± std over seeds; dots: single "
        "seeds; dashed: headline baseline.",
        panels,
    )


FAMILY_COLORS = {
    "lstm": RECURRENT[0],
    "lstm-variant": RECURRENT[1],
    "gru": RECURRENT[2],
    "minlstm": RECURRENT[3],
    "transformer": ATTENTION[0],
    "transformer-hf": ATTENTION[1],
}


def grad_norms(train: pd.DataFrame) -> Figure | None:
    """Distribution of gradient norms before clipping, every logged step of every run, by model family."""
    if "grad_norm" not in train:
        return None
    edges, traces = np.logspace(-3, 3, 25), []
    for family, g in train.groupby("model_family"):
        hists = [np.asarray(x["hist"]) for x in g["grad_norm"] if isinstance(x, dict) and x.get("hist")]
        if hists:
            total = np.sum(hists, axis=0)
            frac = total / max(total.sum(), 1)
            traces.append(
                Trace(
                    family,
                    list(edges[:-1]),
                    list(frac),
                    "step",
                    family,
                    FAMILY_COLORS.get(family, OTHER[1]),
                    hover=[
                        f"{family}: {f:.1%} of steps with a norm in [{a:.2g}, {b:.2g})"
                        for f, a, b in zip(frac, edges[:-1], edges[1:])
                    ],
                )
            )
    if not traces:
        return None
    return Figure(
        "gradnorm",
        "Gradient norms before clipping, by model family",
        f"{run_caption(train, budget=False)}; every logged step of every run.",
        [Panel(traces, "gradient norm", "fraction of steps", xlog=True)],
    )


# ---- speed and memory ----------------------------------------------------------------------------

# A panel per timed call: its tokens/s and their spread (fields of suite.records.Throughput).
RATES = (
    ("train", "train_tokens_per_s", "train_spread_tokens_per_s"),
    ("inference", "inference_tokens_per_s", "inference_spread_tokens_per_s"),
)


def throughput(thr: pd.DataFrame, records: pd.DataFrame, colors: Colors) -> Figure | None:
    """Training and inference tokens/s per task config (median; error bar: spread from the IQR)."""
    if thr is None or thr.empty:
        return None
    panels, short = [], short_configs(list(thr["config"].unique()))
    for kind, rate_column, spread_column in RATES:
        traces = []
        for model, g in colors.groups(thr):
            rate, spread = g[rate_column], g[spread_column].fillna(0)
            traces.append(
                Trace(
                    model,
                    [short[c] for c in g["config"]],
                    list(rate),
                    "bar",
                    model,
                    colors(model),
                    list(spread),
                    hover=[
                        f"{model} on {c}<br>{v:,.0f} ± {s:,.0f} tokens/s<br>{b}"
                        for c, v, s, b in zip(g["config"], rate, spread, g["backend"])
                    ],
                )
            )
        panels.append(Panel(traces, "", f"{kind} tokens/s", title=kind, ylog=True))
    return Figure(
        "throughput",
        "Throughput at each task's size",
        f"{timing_caption(records)}. Median over timed steps; error bar: spread from the IQR.",
        panels,
    )


def latency(lat: pd.DataFrame | None, colors: Colors) -> Figure | None:
    ok = lat[lat["status"] == "ok"] if lat is not None and not lat.empty else None
    if ok is None or ok.empty:
        return None
    traces = []
    for model, g in colors.groups(ok):
        g = g.sort_values("context")
        ms, iqr = g["latency_seconds"] * 1e3, (g["latency_iqr_seconds"] * 1e3).fillna(0)
        traces.append(
            Trace(
                model,
                list(g["context"]),
                list(ms),
                "lines+markers",
                model,
                colors(model),
                list(iqr),
                hover=[
                    f"{model}, context {c}<br>{m:.3g} ms per token (IQR {q:.2g})<br>{b}"
                    for c, m, q, b in zip(g["context"], ms, iqr, g["backend"])
                ],
            )
        )
    return Figure(
        "latency",
        "Per-token decoding latency: LSTM carried state against Transformer KV cache",
        f"{timing_caption(ok)}. Median; error bar: IQR.",
        [
            Panel(
                traces,
                "context length (positions already decoded)",
                "ms per generated token",
                xlog=True,
                ylog=True,
            )
        ],
    )


def scaling(sc: pd.DataFrame | None, colors: Colors) -> Figure | None:
    ok = sc[sc["status"] == "ok"] if sc is not None and not sc.empty else None
    if ok is None or ok.empty:
        return None
    time_traces, mem_traces = [], []
    for model, g in colors.groups(ok):
        g = g.sort_values("seq_len")
        ms, mib = g["train_step_seconds"] * 1e3, g["peak_bytes"] / 2**20
        time_traces.append(
            Trace(
                model,
                list(g["seq_len"]),
                list(ms),
                "lines+markers",
                model,
                colors(model),
                hover=[f"{model}, T = {t}: {v:.3g} ms" for t, v in zip(g["seq_len"], ms)],
            )
        )
        mem_traces.append(
            Trace(
                model,
                list(g["seq_len"]),
                list(mib),
                "lines+markers",
                model,
                colors(model),
                legend=False,
                hover=[f"{model}, T = {t}: {v:.3g} MiB" for t, v in zip(g["seq_len"], mib)],
            )
        )
    return Figure(
        "scaling",
        "Sequence-length scaling of a training step",
        f"{timing_caption(ok)}. Log-log: slope 1 is linear in T, slope 2 quadratic.",
        [
            Panel(time_traces, "sequence length T", "forward+backward ms", xlog=True, ylog=True),
            Panel(mem_traces, "sequence length T", "peak tensor memory (MiB)", xlog=True, ylog=True),
        ],
    )


MODE_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]


def microbench(mb: pd.DataFrame, machine: str) -> Figure | None:
    """The pytest-benchmark micro suite at the standard size: time relative to nn.LSTM and, where the
    benchmarks recorded it, the share of the machine's GEMM rate each implementation reaches (roofline)."""
    if mb is None or mb.empty or "x_vs_nn_lstm" not in mb:
        return None
    std = _standard_size(mb)
    ratio, roof = [], []
    for (mode, g), color in zip(std.groupby("mode", sort=False), MODE_COLORS * 2):
        g = g.sort_values("x_vs_nn_lstm", ascending=False)
        hover = [
            f"{i} ({mode})<br>{m:.3g} ms (IQR {q:.2g}); {r:.2f}x nn.LSTM" + _roof(r_)
            for (i, m, q, r), r_ in zip(
                _zip(g, "impl", "median_ms", "iqr_ms", "x_vs_nn_lstm"), g.to_dict("records")
            )
        ]
        ratio.append(Trace(mode, list(g["x_vs_nn_lstm"]), list(g["impl"]), "hbar", mode, color, hover=hover))
        if "pct_of_gemm" in g and g["pct_of_gemm"].notna().any():
            roof.append(
                Trace(
                    mode,
                    list(g["pct_of_gemm"]),
                    list(g["impl"]),
                    "hbar",
                    mode,
                    color,
                    legend=False,
                    hover=hover,
                )
            )
    size = std.iloc[0]
    panels = [Panel(ratio, "time relative to nn.LSTM (lower is faster; 1 = nn.LSTM)")]
    if roof:
        panels.append(Panel(roof, "achieved GFLOP/s as % of the machine's GEMM rate"))
    threads = ", ".join(str(int(t)) for t in sorted(set(std.get("threads", pd.Series(dtype=float)).dropna())))
    return Figure(
        "microbench",
        f"LSTM implementations at B={size.get('B')}, T={size.get('T')}, "
        f"I={size.get('I')}, H={size.get('H')} (pytest-benchmark)",
        f"{machine}; {threads} thread(s). Medians of one pytest-benchmark run.",
        panels,
    )


def _standard_size(mb: pd.DataFrame) -> pd.DataFrame:
    """The rows at the size most implementations ran at (the suite's standard B, T, I, H): one size only, so
    that the sweep's other batch sizes at the same T and H are not drawn over it."""
    size = ["B", "T", "I", "H"]
    rows = mb[mb["impl"] != "torch.mm"].dropna(subset=size)
    if rows.empty:
        return mb
    counts = rows.groupby(size)["impl"].nunique()
    b, t, i, h = counts.idxmax()
    return rows[(rows["B"] == b) & (rows["T"] == t) & (rows["I"] == i) & (rows["H"] == h)]


def _roof(r: dict) -> str:
    gflops, pct = r.get("gflops"), r.get("pct_of_gemm")
    if gflops is None or pd.isna(gflops):
        return ""
    share = f" = {pct:.3g}% of GEMM" if pct is not None and pd.notna(pct) else ""
    return f"<br>{gflops:.3g} GFLOP/s{share}"
