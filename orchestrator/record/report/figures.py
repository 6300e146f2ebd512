"""The report's figures (matplotlib): the plots unlearning papers show, per scenario.

Every method keeps one colour (Okabe-Ito, safe for colour-blind readers), one marker and one line
style across all figures, so that figures also read in grayscale; presets and chosen configurations
are marked by their outline, the original and the oracle are black reference points. A figure
function returns None when its data is absent (the page says why).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit
import matplotlib.pyplot as plt
import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from orchestrator.job.objectives import UNITS
from orchestrator.record.fronts import method_fronts
from orchestrator.record.report.source import ScenarioData

OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*", "d"]
LINESTYLES = ["-", "--", "-.", ":"]
PRESET = "preset"


@dataclass(frozen=True)
class Style:
    color: str
    marker: str
    linestyle: str


def styles(methods: Iterable[str]) -> dict[str, Style]:
    """A fixed style per method, in job order (black is kept for the references)."""
    out = {}
    for i, method in enumerate(dict.fromkeys(methods)):
        out[method] = Style(OKABE_ITO[i % 7], MARKERS[i % len(MARKERS)], LINESTYLES[i % len(LINESTYLES)])
    return out


def _finished(rows: list[dict[str, Any]], method: str | None = None) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] == "finished" and (method is None or r["method"] == method)]


def _ok(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _new(width: float = 7.0, height: float = 4.6, ncols: int = 1, nrows: int = 1) -> tuple[Figure, Any]:
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, constrained_layout=True)
    return fig, axes


def _references(ax: Any, sc: ScenarioData, x: str, y: str) -> None:
    for name, marker, face in (("original", "D", "white"), ("oracle", "X", "black")):
        pts = [(r[x], r[y]) for r in sc.rows if r["method"] == name and _ok(r[x]) and _ok(r[y])]
        if pts:
            xs, ys = zip(*pts)
            label = "oracle (retrain)" if name == "oracle" else "original"
            ax.scatter(xs, ys, marker=marker, s=110, facecolor=face, edgecolor="black", linewidth=1.4, zorder=5,
                       label=label)


def _method_points(ax: Any, sc: ScenarioData, style: dict[str, Style], x: str, y: str) -> None:
    """Every finished trial of every method; presets outlined thin, the chosen configuration thick."""
    for method in sc.methods:
        st = style[method]
        rows = [r for r in _finished(sc.rows, method) if _ok(r[x]) and _ok(r[y])]
        plain = [r for r in rows if not r["is_best"] and r["trial_id"] != PRESET]
        preset = [r for r in rows if not r["is_best"] and r["trial_id"] == PRESET]
        best = [r for r in rows if r["is_best"]]
        if plain:
            ax.scatter([r[x] for r in plain], [r[y] for r in plain], marker=st.marker, s=26, color=st.color,
                       alpha=0.55, linewidth=0)
        if preset:
            ax.scatter([r[x] for r in preset], [r[y] for r in preset], marker=st.marker, s=60, color=st.color,
                       edgecolor="black", linewidth=0.8, zorder=3)
        if best:
            ax.scatter([r[x] for r in best], [r[y] for r in best], marker=st.marker, s=130, color=st.color,
                       edgecolor="black", linewidth=2.0, zorder=4)


def _legend(ax: Any, sc: ScenarioData, style: dict[str, Style], extra: list[Line2D] | None = None,
            lines: bool = False) -> None:
    handles = [Line2D([], [], color=style[m].color, marker=style[m].marker, linestyle=style[m].linestyle if lines
                      else "none", markersize=7, label=m) for m in sc.methods]
    handles += extra or []
    have = {h.get_label() for h in handles}
    handles += [h for h in ax.get_legend_handles_labels()[0] if h.get_label() not in have]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


MARKS = [Line2D([], [], marker="o", color="0.6", markeredgecolor="black", markeredgewidth=0.8, linestyle="none",
                markersize=7, label="preset"),
         Line2D([], [], marker="o", color="0.6", markeredgecolor="black", markeredgewidth=2.0, linestyle="none",
                markersize=10, label="chosen configuration")]


# ----------------------------------------------------------------------------- the figures
def tradeoff(sc: ScenarioData, style: dict[str, Style]) -> Figure | None:
    """Forget accuracy against retained-class test accuracy (class removal) or test accuracy."""
    x = "ta_retained" if sc.class_removal else "ta"
    if not any(_ok(r[x]) and _ok(r["fa"]) for r in _finished(sc.rows)):
        return None
    fig, axes = _new()
    ax = axes[0][0]
    _method_points(ax, sc, style, x, "fa")
    _references(ax, sc, x, "fa")
    ax.set_xlabel(("retained-class test accuracy" if sc.class_removal else "test accuracy") + " (%, report part)")
    ax.set_ylabel("forget accuracy (%, report part)")
    ax.set_title(f"{sc.name}: forgetting vs utility, every finished trial and seed")
    ax.grid(alpha=0.3)
    _legend(ax, sc, style, MARKS)
    return fig


def frontier(sc: ScenarioData, style: dict[str, Style]) -> Figure | None:
    """Average gap to the oracle against unlearning time (log): the cost / quality frontier."""
    rows = [r for r in _finished(sc.rows) if r["method"] in sc.methods and _ok(r["avg_gap"])
            and _ok(r["unlearn_seconds"]) and r["unlearn_seconds"] > 0]
    if not rows:
        return None
    fig, axes = _new()
    ax = axes[0][0]
    _method_points(ax, sc, style, "unlearn_seconds", "avg_gap")
    pts = sorted((r["unlearn_seconds"], r["avg_gap"]) for r in rows)
    front, best = [], math.inf
    for t, gap in pts:
        if gap < best:
            front.append((t, gap))
            best = gap
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="black", linewidth=1, alpha=0.7,
            label="frontier (best gap so far)")
    oracle = [r["unlearn_seconds"] for r in sc.rows if r["method"] == "oracle" and _ok(r["unlearn_seconds"])]
    if oracle:
        t = float(np.mean(oracle))
        ax.axvline(t, color="black", linestyle="--", linewidth=1.2, label=f"retrain (oracle): {t:.1f} s")
    ax.set_xscale("log")
    ax.set_xlabel("unlearning time (s, log scale)")
    ax.set_ylabel("average gap to the oracle (points, report part)")
    ax.set_title(f"{sc.name}: cost vs quality (lower left is better)")
    ax.grid(alpha=0.3, which="both")
    _legend(ax, sc, style, MARKS)
    return fig


def pareto(sc: ScenarioData, style: dict[str, Style]) -> Figure | None:
    """Each method's tried configurations on the first two objectives (selection seed, selection part), its
    Pareto front outlined (and joined when the job has exactly two objectives), the chosen configuration
    outlined thick."""
    if len(sc.objectives) < 2:
        return None
    fronts = [f for f in method_fronts(pa.Table.from_pylist(sc.rows), sc.objectives) if f.scenario == sc.name]
    if not any(t.on_front for f in fronts for t in f.tried):
        return None
    fig, axes = _new()
    ax = axes[0][0]
    for f in fronts:
        st = style.get(f.method)
        if st is None:
            continue
        pts = [t for t in f.tried if all(math.isfinite(v) for v in t.values[:2])]
        ax.scatter([t.values[0] for t in pts], [t.values[1] for t in pts], marker=st.marker, s=26, color=st.color,
                   alpha=0.35, linewidth=0)
        front = sorted((t for t in pts if t.on_front), key=lambda t: (t.values[0], t.values[1]))
        if front and len(sc.objectives) == 2:  # with more, a member may sit above another in this projection
            ax.step([t.values[0] for t in front], [t.values[1] for t in front], where="post", color=st.color,
                    linewidth=1.2, alpha=0.9)
        if front:
            ax.scatter([t.values[0] for t in front], [t.values[1] for t in front], marker=st.marker, s=60,
                       color=st.color, edgecolor="black", linewidth=0.8, zorder=3)
        chosen = [t for t in pts if t.chosen]
        if chosen:
            ax.scatter([t.values[0] for t in chosen], [t.values[1] for t in chosen], marker=st.marker, s=150,
                       color=st.color, edgecolor="black", linewidth=2.2, zorder=4)
    x, y = sc.objectives[:2]
    ax.set_xlabel(f"{x} ({UNITS[x]}, selection part; lower is better)")
    ax.set_ylabel(f"{y} ({UNITS[y]}, selection part; lower is better)")
    more = (f"\nfront on {', '.join(sc.objectives)}; drawn on the first two (members outlined)"
            if len(sc.objectives) > 2 else "")
    ax.set_title(f"{sc.name}: Pareto fronts on seed {sc.seed}{more}", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, sc, style, [Line2D([], [], marker="o", color="0.6", markeredgecolor="black", markeredgewidth=0.8,
                                   linestyle="-", markersize=7, label="on the front"),
                            Line2D([], [], marker="o", color="0.6", markeredgecolor="black", markeredgewidth=2.2,
                                   linestyle="none", markersize=10, label="chosen")])
    return fig


def epochs(sc: ScenarioData, style: dict[str, Style]) -> Figure | None:
    """Forget and remaining accuracy after each epoch of each method's chosen configuration."""
    curves = {m: d for m, d in sc.details.items() if d.epoch_fa or d.epoch_ra}
    if not curves:
        return None
    fig, axes = _new(11, 4.2, ncols=2)
    oracle = [r for r in sc.rows if r["method"] == "oracle" and r["seed"] == sc.seed]
    for ax, key, title in ((axes[0][0], "fa", "forget accuracy"), (axes[0][1], "ra", "remaining accuracy")):
        for method, detail in curves.items():
            curve = detail.epoch_fa if key == "fa" else detail.epoch_ra
            if curve:
                st = style[method]
                ax.plot([s for s, _ in curve], [v for _, v in curve], color=st.color, marker=st.marker,
                        linestyle=st.linestyle, markersize=4, label=method)
        target = oracle[0].get(f"sel_{key}") if oracle else None
        if _ok(target):
            ax.axhline(target, color="black", linestyle="--", linewidth=1.2, label="oracle")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{title} (%, selection part)")
        ax.grid(alpha=0.3)
        ax.set_title(f"{sc.name}: {title}, chosen configuration, seed {sc.seed}")
    _legend(axes[0][1], sc, {m: style[m] for m in sc.methods}, lines=True)
    return fig


def relearning(sc: ScenarioData, style: dict[str, Style]) -> Figure | None:
    """Forget accuracy while each model is trained on D_r again: how fast the forgotten data comes back."""
    curves = {m: d.relearn_fa for m, d in sc.details.items() if d.relearn_fa}
    refs = {n: c for n, c in sc.reference_relearn.items() if c}
    if not curves:
        return None
    fig, axes = _new()
    ax = axes[0][0]
    for method, curve in curves.items():
        st = style[method]
        ax.plot([s for s, _ in curve], [v for _, v in curve], color=st.color, marker=st.marker,
                linestyle=st.linestyle, markersize=4, label=method)
    for name, curve in refs.items():
        ax.plot([s for s, _ in curve], [v for _, v in curve], color="black", linewidth=1.6,
                linestyle="--" if name == "oracle" else ":", marker="X" if name == "oracle" else "D", markersize=5,
                label="oracle (retrain)" if name == "oracle" else "original")
    ax.set_xlabel("relearning epoch on D_r (0 = before)")
    ax.set_ylabel("forget accuracy (%)")
    ax.set_title(f"{sc.name}: relearning, chosen configuration, seed {sc.seed}")
    ax.grid(alpha=0.3)
    _legend(ax, sc, {m: style[m] for m in sc.methods}, lines=True)
    return fig


def mean_curve(by_seed: dict[int, list[tuple[int, float]]]) -> tuple[list[int], list[float], int]:
    """The mean over seeds at every step that all seeds recorded (NaNs skipped), and how many seeds."""
    curves = [dict(c) for c in by_seed.values() if c]
    if not curves:
        return [], [], 0
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    means = []
    for step in steps:
        values = [c[step] for c in curves if _ok(c[step])]
        means.append(float(np.mean(values)) if values else float("nan"))
    return steps, means, len(curves)


def relearning_gap(sc: ScenarioData, style: dict[str, Style]) -> Figure | None:
    """acc(D_r) - acc(D_f) while each model is trained on D_r again, every few batches, mean over seeds:
    the paper's relearning figure. A model that only hid D_f closes the gap faster than the oracle."""
    curves = {m: mean_curve(d.relearn_gap) for m, d in sc.details.items() if d.relearn_gap}
    refs = {n: mean_curve(c) for n, c in sc.reference_gap.items() if c}
    curves = {m: c for m, c in curves.items() if c[0]}
    refs = {n: c for n, c in refs.items() if c[0]}
    if not curves and not refs:
        return None
    fig, axes = _new()
    ax = axes[0][0]
    for method, (steps, means, n) in curves.items():
        st = style[method]
        ax.plot(steps, means, color=st.color, marker=st.marker, linestyle=st.linestyle, markersize=4,
                label=f"{method} ({n} seed{'s' if n > 1 else ''})")
    for name, (steps, means, n) in refs.items():
        label = "oracle (retrain)" if name == "oracle" else "original"
        ax.plot(steps, means, color="black", linewidth=1.6, linestyle="--" if name == "oracle" else ":",
                marker="X" if name == "oracle" else "D", markersize=5,
                label=f"{label} ({n} seed{'s' if n > 1 else ''})")
    ax.axhline(0, color="0.6", linewidth=0.8)
    ax.set_xlabel("relearning batches on D_r (optimizer steps, 0 = before)")
    ax.set_ylabel("acc(D_r) - acc(D_f) (points)")
    ax.set_title(f"{sc.name}: relearning gap, chosen configuration, mean over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


def membership(sc: ScenarioData, style: dict[str, Style]) -> Figure | None:
    """Distribution of the forget set's membership score (logit of the true-class confidence) under
    each method's chosen model, against the oracle's forget and test sets."""
    scored = {m: d.forget_scores for m, d in sc.details.items() if d.forget_scores is not None
              and len(d.forget_scores)}
    if not scored:
        return None
    every = np.concatenate(list(scored.values()) + [a for a in (sc.oracle_forget_scores, sc.oracle_test_scores)
                                                    if a is not None])
    bins = np.linspace(np.percentile(every, 0.5), np.percentile(every, 99.5), 40)
    ncols = min(4, len(scored))
    nrows = math.ceil(len(scored) / ncols)
    fig, axes = _new(3.3 * ncols + 0.5, 2.6 * nrows + 0.4, ncols=ncols, nrows=nrows)
    for ax in axes.flat[len(scored):]:
        ax.axis("off")
    for ax, (method, scores) in zip(axes.flat, scored.items()):
        st = style[method]
        ax.hist(np.clip(scores, bins[0], bins[-1]), bins=bins, density=True, histtype="stepfilled", alpha=0.35,
                color=st.color, label=f"{method}: D_f")
        ax.hist(np.clip(scores, bins[0], bins[-1]), bins=bins, density=True, histtype="step", color=st.color,
                linewidth=1.5)
        if sc.oracle_forget_scores is not None:
            ax.hist(np.clip(sc.oracle_forget_scores, bins[0], bins[-1]), bins=bins, density=True, histtype="step",
                    color="black", linestyle="--", linewidth=1.4, label="oracle: D_f")
        if sc.oracle_test_scores is not None:
            ax.hist(np.clip(sc.oracle_test_scores, bins[0], bins[-1]), bins=bins, density=True, histtype="step",
                    color="0.45", linestyle=":", linewidth=1.4, label="oracle: test")
        ax.set_title(method, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False)
    fig.supxlabel("membership score log(p / (1 - p)) of the true class (report part)", fontsize=9)
    fig.suptitle(f"{sc.name}: forget-set scores, chosen model vs oracle (seed {sc.seed})", fontsize=10)
    return fig


# ----------------------------------------------------------------------------- the sweep
def sweep_table(sc: ScenarioData, method: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(finished trials on the sweep seed with their params, the parameters that varied)."""
    rows = [r for r in _finished(sc.rows, method) if r["seed"] == sc.seed and _ok(r["objective"])]
    params = [json.loads(r["params"] or "{}") for r in rows]
    keys = sorted({k for p in params for k in p})
    varied = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in params}) > 1]
    return [{**r, "_params": p} for r, p in zip(rows, params)], varied


def importance(values: list[Any], objective: list[float]) -> float:
    """|Spearman rho| of a numeric parameter with the objective, or the correlation ratio eta of a
    categorical one: how much of the objective's ranking the parameter explains (0..1)."""
    y = np.asarray(objective, dtype=float)
    if len(y) < 3 or np.std(y) == 0:
        return float("nan")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        from scipy.stats import spearmanr

        rho = spearmanr(np.asarray(values, dtype=float), y).statistic
        return float(abs(rho)) if math.isfinite(rho) else float("nan")
    groups: dict[str, list[float]] = {}
    for v, o in zip(values, y):
        groups.setdefault(json.dumps(v), []).append(o)
    between = sum(len(g) * (np.mean(g) - y.mean()) ** 2 for g in groups.values())
    return float(math.sqrt(between / (len(y) * np.var(y))))


def sweep(sc: ScenarioData, method: str, style: dict[str, Style]) -> Figure | None:
    """Parameter importance and each varied parameter against the objective (selection part)."""
    rows, varied = sweep_table(sc, method)
    if len(rows) < 3 or not varied:
        return None
    st = style[method]
    objective = [r["objective"] for r in rows]
    ncols = min(4, len(varied) + 1)
    nrows = math.ceil((len(varied) + 1) / ncols)
    fig, axes = _new(3.3 * ncols, 2.8 * nrows + 0.4, ncols=ncols, nrows=nrows)
    for ax in axes.flat[len(varied) + 1:]:
        ax.axis("off")
    scores = [importance([r["_params"].get(k) for r in rows], objective) for k in varied]
    ax = axes.flat[0]
    order = np.argsort([-s if math.isfinite(s) else 1 for s in scores])
    ax.barh([varied[i] for i in order][::-1], [scores[i] if math.isfinite(scores[i]) else 0 for i in order][::-1],
            color=st.color, edgecolor="black", hatch="//")
    ax.set_xlim(0, 1)
    ax.set_xlabel("importance (|Spearman rho| or eta)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title("parameter importance", fontsize=9)
    positive = objective and min(objective) > 0 and max(objective) / min(objective) > 50
    for ax, key in zip(list(axes.flat)[1:], varied):
        values = [r["_params"].get(key) for r in rows]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        xs = values if numeric else [str(v) for v in values]
        presets = [r["trial_id"].startswith(PRESET) for r in rows]
        chosen = [r["is_best"] for r in rows]
        for flag, size, edge, width in ((lambda p, c: not p and not c, 28, "none", 0),
                                        (lambda p, c: p and not c, 60, "black", 0.8),
                                        (lambda p, c: c, 130, "black", 2.0)):
            pick = [i for i in range(len(rows)) if flag(presets[i], chosen[i])]
            if pick:
                ax.scatter([xs[i] for i in pick], [objective[i] for i in pick], marker=st.marker, s=size,
                           color=st.color, edgecolor=edge, linewidth=width, zorder=3)
        if numeric and min(values) > 0 and max(values) / min(values) > 20:
            ax.set_xscale("log")
        if positive:
            ax.set_yscale("log")
        ax.set_xlabel(key, fontsize=8)
        ax.set_ylabel("objective (selection)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{sc.name} / {method}: {len(rows)} finished trials on seed {sc.seed} "
                 f"(thin outline: preset, thick: chosen)", fontsize=10)
    return fig


def scenario_figures(sc: ScenarioData) -> dict[str, Figure | None]:
    """Every figure of one scenario by name (None: no data for it)."""
    style = styles(sc.methods)
    figs = {"tradeoff": tradeoff(sc, style), "frontier": frontier(sc, style), "pareto": pareto(sc, style),
            "epochs": epochs(sc, style),
            "relearning": relearning(sc, style), "relearning_gap": relearning_gap(sc, style),
            "membership": membership(sc, style)}
    for method in sc.methods:
        figs[f"sweep-{method}"] = sweep(sc, method, style)
    return figs

