"""The report as one self-contained HTML page: inline CSS, figures embedded as PNG data URIs, no
script and no network access, so it opens offline, from a mail attachment or inside the MLflow
artifact viewer. Every user-provided string is HTML-escaped."""

from __future__ import annotations

import base64
import datetime as dt
import math
from html import escape
from typing import Any

import pyarrow as pa

from orchestrator.record.fronts import cross_method, labels, method_fronts
from orchestrator.record.links import UiLinks
from orchestrator.record.report.source import ReportSource, ScenarioData

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1180px;color:#1a1a1a;
line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.5rem;border-bottom:2px solid #ddd;padding-bottom:.2rem}
h3{margin-top:1.6rem}.meta{color:#555;font-size:.9rem}.note{background:#fff4e5;border-left:4px solid #e69f00;
padding:.5rem .8rem;margin:.6rem 0}.fail{background:#fdecea;border-left-color:#d55e00}
table{border-collapse:collapse;font-size:.8rem;margin:.6rem 0;width:100%}
th,td{border:1px solid #ccc;padding:.25rem .4rem;text-align:right;white-space:nowrap}th{background:#f2f2f2}
td.l,th.l{text-align:left}tr.ref td{background:#f7f7f7;font-style:italic}tr.win td{font-weight:600}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85rem;color:#444}.absent{color:#777;font-size:.85rem}.links a{margin-right:1.2rem}
.wrap{overflow-x:auto}code{background:#f4f4f4;padding:0 .2rem}tr.miss td{background:#fdecea}
"""

COLUMNS = [("ra", "RA"), ("fa", "FA"), ("ta", "TA"), ("ta_retained", "TA retained"),
           ("ta_forgotten", "TA forgotten"), ("mia_official", "MIA (official)"), ("mia_efficacy", "MIA-efficacy"),
           ("mia_auc", "loss MIA AUC"), ("lira_auc", "LiRA AUC"), ("lira_tpr_at_1pct_fpr", "LiRA TPR@1%FPR"),
           ("relearn_epochs", "relearn epochs"), ("avg_gap", "avg gap"), ("unlearn_seconds", "time (s)"),
           ("rte", "RTE"), ("objective", "objective")]
UNITS = {"ra": "% report", "fa": "% report", "ta": "% report", "ta_retained": "% report",
         "ta_forgotten": "% report", "mia_official": "fraction, report", "mia_efficacy": "% report",
         "mia_auc": "report", "lira_auc": "report", "lira_tpr_at_1pct_fpr": "report", "relearn_epochs": "report",
         "avg_gap": "points, report", "unlearn_seconds": "", "rte": "oracle s / s", "objective": "selection"}
CAPTIONS = {
    "tradeoff": "Forget accuracy against utility for every finished trial of every seed. Thin outline: the "
                "method's preset; thick outline: its chosen configuration; the oracle (retraining without D_f) "
                "is where a method should land.",
    "frontier": "Average gap to the oracle (over RA, FA, TA and the official MIA, report part) against unlearning "
                "time. The black step is the best gap reachable within a time; the dashed line is retraining.",
    "pareto": "Every configuration each method tried, on the first two of the job's objectives (selection part, "
              "on the selection seed where all of them ran; lower left is better). Outlined: a method's Pareto "
              "front, the configurations no other one of the method beats on every objective (joined by a line "
              "when the job has two objectives; with more, a member may lie above another in this view). Thick "
              "outline: the chosen configuration, always a member of its front.",
    "epochs": "Forget and remaining accuracy after every epoch of each method's chosen configuration (selection "
              "part, the cheap per-epoch objective early stopping reads); dashed: the oracle.",
    "relearning": "Forget accuracy while each chosen model is trained on the remaining data again: a model that "
                  "only hid the forgotten data recovers it faster than the oracle.",
    "relearning_gap": "Remaining minus forget accuracy, acc(D_r) - acc(D_f) in points, while each chosen model "
                      "is trained on the remaining data again, every few batches, mean over the seeds (D_r: a fixed "
                      "random sample of it; D_f: all of it). A model that only hid the forgotten data closes the gap "
                      "faster than the oracle (dashed).",
    "membership": "Distribution of the forget set's membership score under each chosen model (filled) against the "
                  "oracle's forget set (dashed) and test set (dotted): a model that forgot looks like the oracle.",
}
ABSENT = {
    "tradeoff": "no finished trial has forget and test accuracy",
    "frontier": "no finished trial has an average gap and an unlearning time",
    "pareto": "the job searched one objective (sweep.objectives lists fewer than two): each method's front is its "
              "lowest objective, in the table above",
    "epochs": "no per-epoch metrics were read (a summary-only report, or no method reported epochs)",
    "relearning": "the job did not ask for relearning (evaluation.relearn)",
    "relearning_gap": "no run has a relearning gap curve (evaluation.relearn.gap_every_batches not set, or a "
                      "summary-only report)",
    "membership": "no per-sample tables were read (a summary-only report)",
}


def _fmt(value: Any, std: Any = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    digits = 3 if abs(value) < 1 else 2
    text = f"{value:.{digits}f}"
    if std is not None and isinstance(std, float) and math.isfinite(std):
        text += f" ± {std:.{digits}f}"
    return text


def comparison_table(table: pa.Table, class_removal: bool) -> str:
    """One row per (method, configuration): mean ± std over seeds (``results --by method``)."""
    rows = table.to_pylist()
    shown = [(k, label) for k, label in COLUMNS
             if any(isinstance(r.get(k), float) and math.isfinite(r[k]) for r in rows)
             and (class_removal or k != "ta_forgotten")]
    gaps = [r["avg_gap"] for r in rows if r["config"] != "reference" and r["method"] != "retrain"
            and isinstance(r["avg_gap"], float) and math.isfinite(r["avg_gap"])]
    best_gap = min(gaps) if gaps else None
    head = ("<tr><th class=l>method</th><th class=l>configuration</th><th class=l>trial</th><th>seeds</th>"
            "<th>trials</th>" + "".join(f"<th>{escape(label)}<br><small>{escape(UNITS[k])}</small></th>"
                                        for k, label in shown) + "</tr>")
    body = []
    for r in rows:
        cls = "ref" if r["config"] == "reference" else ("win" if best_gap is not None and r["avg_gap"] == best_gap
                                                        and r["method"] != "retrain" else "")
        name = "oracle (retrain)" if r["method"] == "oracle" else r["method"]
        cells = "".join(f"<td>{_fmt(r[k], r.get(f'{k}_std'))}</td>" for k, _ in shown)
        body.append(f"<tr class='{cls}'><td class=l>{escape(name)}</td><td class=l>{escape(r['config'])}</td>"
                    f"<td class=l>{escape(r['trial_id'] or '')}</td><td>{r['seeds']}</td><td>{r['trials']}</td>"
                    f"{cells}</tr>")
    return f"<div class=wrap><table>{head}{''.join(body)}</table></div>"


def targets_table(checked: list[Any]) -> str:
    """The scenario's expect: targets (``orchestrator.record.expectations``): the columns ``results --check``
    prints, a missed target's row marked, then how many were met."""
    from orchestrator.record.expectations import COLUMNS, cells, met_line

    head = "<tr>" + "".join(f"<th class=l>{escape(c)}</th>" for c in COLUMNS) + "</tr>"
    body = "".join(f"<tr class='{'' if r.passed else 'miss'}'>"
                   + "".join(f"<td class=l>{escape(v)}</td>" for v in cells(r)) + "</tr>" for r in checked)
    return f"<div class=wrap><table>{head}{body}</table></div><p class=meta>{escape(met_line(checked))}</p>"


def status_table(sc: ScenarioData) -> tuple[str, int]:
    """Trials per method by status; returns (html, how many did not finish)."""
    counts: dict[str, dict[str, int]] = {}
    for r in sc.rows:
        if r["method"] in ("original", "oracle"):
            continue
        counts.setdefault(r["method"], {"finished": 0, "stopped": 0, "failed": 0})
        counts[r["method"]][r["status"]] = counts[r["method"]].get(r["status"], 0) + 1
    unfinished = sum(c["stopped"] + c["failed"] for c in counts.values())
    body = "".join(f"<tr><td class=l>{escape(m)}</td><td>{c['finished']}</td><td>{c['stopped']}</td>"
                   f"<td>{c['failed']}</td></tr>" for m, c in counts.items())
    return ((f"<table style='width:auto'><tr><th class=l>method</th><th>finished</th><th>stopped</th><th>failed</th>"
            f"</tr>{body}</table>"), unfinished)


def fronts_block(sc: ScenarioData) -> str:
    """Each method's Pareto front as a table (the chosen configuration and the rule that chose it) and the
    comparison across methods."""
    names = labels(sc.objectives)
    fronts = [f for f in method_fronts(pa.Table.from_pylist(sc.rows), sc.objectives) if f.scenario == sc.name]
    if not fronts:
        return ""
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    body = []
    for f in fronts:
        shown = f.front + [t for t in f.tried if t.chosen and not t.on_front]
        for t in shown:
            cells = "".join(f"<td>{_fmt(v)}" + (f" ({_fmt(m)})" if t.seeds > 1 else "") + "</td>"
                            for v, m in zip(t.values, t.means or t.values, strict=True))
            reported = "".join(f"<td>{_fmt(t.reported.get(m))}</td>" for m in ("ra", "fa", "ta", "mia_official",
                                                                                 "unlearn_seconds"))
            mark = escape(t.chosen_by or "chosen") if t.chosen else ""
            body.append(f"<tr{' class=win' if t.chosen else ''}><td class=l>{escape(f.method)} (seed "
                        f"{f.selection_seed})</td>"
                        f"<td class=l>{escape(t.trial_id)}</td>{cells}<td>{t.seeds}</td>{reported}"
                        f"<td class=l>{mark}</td></tr>")
    across = cross_method(fronts, sc.objectives).get(sc.name, [])
    return (f"<h3>Pareto fronts</h3><p class=meta>Each method's configurations that no other configuration of it "
            f"beats on every objective ({escape(', '.join(names))}; selection part, on the method's selection seed, "
            f"where all its configurations ran; in brackets the mean over every seed a configuration ran on; lower is "
            f"better), {sum(len(f.tried) for f in fronts)} tried in all. Chosen by "
            f"<b>{escape(sc.choose or 'scalar: lowest objective')}</b>. RA, FA, TA, MIA and time: report part, mean "
            f"over the seeds each configuration ran on.</p><div class=wrap><table><tr><th class=l>method</th>"
            f"<th class=l>configuration</th>{head}<th>seeds</th><th>RA</th><th>FA</th><th>TA</th><th>MIA</th>"
            f"<th>time (s)</th><th class=l>chosen by</th></tr>{''.join(body)}</table></div>"
            + ("<p class=meta>Across methods: " + escape("; ".join(across)) + "</p>" if across else ""))


def figure_block(name: str, png: bytes | None, title: str, caption: str, reason: str) -> str:
    if png is None:
        return f"<h3>{escape(title)}</h3><p class=absent>Not drawn: {escape(reason)}.</p>"
    data = base64.b64encode(png).decode()
    return (f"<h3>{escape(title)}</h3><figure><img alt='{escape(title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{escape(caption)}</figcaption></figure>")


TITLES = {"tradeoff": "Forgetting vs utility", "frontier": "Cost vs quality", "pareto": "Pareto fronts",
          "epochs": "Per-epoch accuracy",
          "relearning": "Relearning", "relearning_gap": "Relearning gap",
          "membership": "Membership scores of the forget set"}


def render(source: ReportSource, by_method: pa.Table, images: dict[tuple[str, str], bytes | None],
           links: UiLinks | None, serve: str | None, selection_fraction: float | None) -> str:
    """The whole page. ``images``: (scenario, figure name) -> PNG bytes (None: not drawn)."""
    parts = [(f"<!doctype html><html lang=en><head><meta charset=utf-8><title>camu-orch report: {escape(source.job)}"
             f"</title><style>{CSS}</style></head><body>"),
             f"<h1>Unlearning report: {escape(source.job)}</h1>",
             (f"<p class=meta>status {escape(source.status)} · parent run <code>{escape(source.parent_run_id or '–')}"
             f"</code> · experiment {escape(source.experiment_id or '–')} · generated "
             f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}</p>")]
    for note in source.notes:
        parts.append(f"<p class='note fail'>{escape(note)}</p>")
    if links is not None:
        parts.append("<p class=links>MLflow UI: " + " ".join(
            f"<a href='{escape(url)}'>{escape(text)}</a>" for text, url in (
                ("all runs of this job", links.job_runs(source.job)),
                ("best trials only", links.best_trials(source.job)),
                ("parent run", links.run(source.parent_run_id)))) + "</p>")
        if serve:
            parts.append(f"<p class=meta>The links need the UI running: <code>{escape(serve)}</code></p>")
    share = (f"{selection_fraction:.0%} of D_f, D_r and the test set" if selection_fraction is not None
             else "part of D_f, D_r and the test set")
    parts.append(f"<p class=meta>Every metric is measured on the <b>report part</b>; configurations were chosen on "
                 f"the disjoint <b>selection part</b> ({escape(share)}, the <code>objective</code> column). Values are "
                 f"mean ± standard deviation over the seeds (no ± for one seed). Accuracies in %, the official MIA "
                 f"as a fraction, MIA-efficacy in % of D_f predicted non-member.</p>")
    for sc in source.scenarios:
        parts.append(_scenario(sc, by_method, images, links, source.job, source.expect))
    parts.append("</body></html>")
    return "".join(parts)


def _scenario(sc: ScenarioData, by_method: pa.Table, images: dict[tuple[str, str], bytes | None],
              links: UiLinks | None, job: str, expect: list[Any] | None = None) -> str:
    kind = "class removal" if sc.class_removal else f"{sc.kind} removal"
    seeds = sorted({r["seed"] for r in sc.rows})
    mine = by_method.filter(pa.compute.equal(by_method["scenario"], sc.name))
    status, unfinished = status_table(sc)
    out = [(f"<h2 id='{escape(sc.name)}'>{escape(sc.name)} <small class=meta>({escape(kind)}, seeds "
           f"{', '.join(map(str, seeds))}; sweeps on seed {sc.seed})</small></h2>")]
    if links is not None:
        best = [d.run_id for d in sc.details.values()] or \
               [r["run_id"] for r in sc.rows if r["is_best"] and r["seed"] == sc.seed and r["run_id"]]
        out.append("<p class=links>" + f"<a href='{escape(links.best_trials(job, sc.name))}'>best trials in the UI</a>"
                   + (f"<a href='{escape(links.compare(best))}'>compare the chosen configurations</a>"
                      if len(best) > 1 else "") + "</p>")
    if unfinished:
        out.append(f"<p class=note>{unfinished} trial(s) of this scenario did not finish (stopped early by the "
                   f"scheduler or the time budget, or failed); the table below counts finished trials only.</p>")
    out.append(comparison_table(mine, sc.class_removal))
    targets = [t for t in expect or [] if t.scenario == sc.name]
    if targets:
        from orchestrator.record.expectations import evaluate

        out.append("<h3>Targets</h3><p class=meta>The job's <code>expect:</code> targets: the mean over the seeds "
                   "must lie within the tolerance of the value (<code>camu-orch results JOB --check</code>).</p>")
        out.append(targets_table(evaluate(targets, mine)))
    out.append(fronts_block(sc))
    out.append("<details><summary>trials by status</summary>" + status + "</details>")
    for name in ("tradeoff", "frontier", "pareto", "epochs", "relearning", "relearning_gap", "membership"):
        out.append(figure_block(name, images.get((sc.name, name)), TITLES[name], CAPTIONS[name], ABSENT[name]))
    sweeps = [(k[1], v) for k, v in images.items() if k[0] == sc.name and k[1].startswith("sweep-")]
    out.append("<h3>Sweeps</h3>")
    drawn = [(n, png) for n, png in sweeps if png is not None]
    if not drawn:
        out.append("<p class=absent>Not drawn: no method had 3 or more finished trials with varied parameters "
                   "on the sweep seed.</p>")
    for name, png in drawn:
        method = name[len("sweep-"):]
        out.append(figure_block(name, png, f"Sweep: {method}",
                                "Importance: |Spearman rho| of a numeric parameter, or the correlation ratio eta of "
                                "a categorical one, with the selection objective (lower is better); then each "
                                "parameter against the objective.", ""))
    return "".join(out)
