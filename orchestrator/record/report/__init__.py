"""``camu-orch report``: a job's comparison as one self-contained HTML page with the figures unlearning
papers show, also logged to the job's parent run under ``report/`` (with every figure as PNG and SVG
beside it) and linked from the parent run's description.

    source = load_source(tracker, "mnist_compare")           # what the store recorded
    outcome = build_report(tracker, "mnist_compare", Path("report.html"))
"""

from __future__ import annotations

import io
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.record import summary
from orchestrator.record.links import UiLinks, links_for, serve_hint
from orchestrator.record.report.source import ReportSource, load_source
from orchestrator.record.tracking import Tracker

ARTIFACT_DIR = "report"
REPORT_FILE = "report.html"
DESCRIPTION_TAG = "mlflow.note.content"  # the run description the MLflow UI shows (markdown)


@dataclass
class ReportOutcome:
    path: Path
    figures: list[str] = field(default_factory=list)       # "<scenario>-<name>" of every figure drawn
    missing: list[str] = field(default_factory=list)       # figures without data
    artifact_url: str | None = None                        # the report in the MLflow UI (when logged)
    seconds: float = 0.0


def render_source(source: ReportSource, output: Path, links: UiLinks | None = None, serve: str | None = None,
                  figures_dir: Path | None = None) -> ReportOutcome:
    """Draw every figure of ``source``, write the page to ``output`` (and PNG + SVG files to
    ``figures_dir`` when given)."""
    import matplotlib.pyplot as plt

    from orchestrator.record.report import figures, page

    start = time.perf_counter()
    images: dict[tuple[str, str], bytes | None] = {}
    outcome = ReportOutcome(output)
    for sc in source.scenarios:
        for name, fig in figures.scenario_figures(sc).items():
            key = f"{sc.name}-{name}"
            if fig is None:
                images[(sc.name, name)] = None
                outcome.missing.append(key)
                continue
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110)
            images[(sc.name, name)] = buf.getvalue()
            if figures_dir is not None:
                figures_dir.mkdir(parents=True, exist_ok=True)
                (figures_dir / f"{key}.png").write_bytes(buf.getvalue())
                fig.savefig(figures_dir / f"{key}.svg", format="svg")
            plt.close(fig)
            outcome.figures.append(key)
    fractions = [v for v in source.summary.column("selection_fraction").to_pylist()
                 if v is not None and math.isfinite(v)]
    html = page.render(source, summary.by_method(source.summary), images, links, serve,
                       fractions[0] if fractions else None)
    output.write_text(html, encoding="utf-8")
    outcome.seconds = time.perf_counter() - start
    return outcome


def build_report(tracker: Tracker, ident: str, output: Path, ui_url: str | None = None,
                 log: bool = True) -> ReportOutcome:
    """Read job ``ident`` from the store, write its report to ``output`` and (``log``) log it with its
    figures to the parent run under ``report/``, linking it from the run's description."""
    start = time.perf_counter()
    source = load_source(tracker, ident)
    links = links_for(tracker.uri, source.experiment_id, ui_url)
    with tempfile.TemporaryDirectory() as tmp:
        figures_dir = Path(tmp) / "figures"
        outcome = render_source(source, output, links, serve_hint(tracker.uri, ui_url), figures_dir)
        if log:
            named = Path(tmp) / REPORT_FILE  # logged as report/report.html whatever the local file is called
            named.write_bytes(output.read_bytes())
            tracker.log_artifact(source.parent_run_id, named, ARTIFACT_DIR)
            if figures_dir.is_dir():
                tracker.log_artifacts(source.parent_run_id, figures_dir, f"{ARTIFACT_DIR}/figures")
            outcome.artifact_url = links.artifact(source.parent_run_id, f"{ARTIFACT_DIR}/{REPORT_FILE}")
            tracker.set_tags(source.parent_run_id, {DESCRIPTION_TAG: describe(source, links, outcome.artifact_url)})
    outcome.seconds = time.perf_counter() - start
    return outcome


def describe(source: ReportSource, links: UiLinks, report_url: str | None) -> str:
    """The parent run's description (markdown): where the comparison is read."""
    lines = [(f"**camu-orch job `{source.job}`**: {len(source.scenarios)} scenario(s), "
             f"{len({r['method'] for r in source.summary.to_pylist()} - {'original', 'oracle'})} method(s)."), ""]
    if report_url:
        lines.append(f"- [Comparison report]({report_url}) (artifact `{ARTIFACT_DIR}/{REPORT_FILE}`)")
    lines.append(f"- [All runs of the job]({links.job_runs(source.job)})")
    lines.append(f"- [Best trials only]({links.best_trials(source.job)})")
    for sc in source.scenarios:
        best = [d.run_id for d in sc.details.values()]
        if len(best) > 1:
            lines.append(f"- [{sc.name}: compare the chosen configurations]({links.compare(best)})")
    lines += ["", ("In the runs table: *Group by* `camu.method` (or `camu.scenario`) and filter "
                  "``tags.`camu.is_best` = 'true'`` to see one row per method's chosen configuration.")]
    return "\n".join(lines)


__all__ = ["ReportOutcome", "ReportSource", "build_report", "describe", "load_source", "render_source"]
