"""The report stage: after every chain, write report.html and summary.md for the whole run."""

from __future__ import annotations

from dataclasses import dataclass

from prunus.pipeline.stages import StageConfig, StageContext, StageResult, register_stage

__all__ = ["ReportStage"]


@dataclass(frozen=True)
class ReportStage(StageConfig):
    """Write the run's report (HTML with embedded plots, and Markdown) into the run directory."""

    title: str = ""  # default: the recipe's name


@register_stage("report", ReportStage, needs_model=False, makes_model=False, scope="run")
def run_report(cfg: ReportStage, ctx: StageContext) -> StageResult:
    """Write RUN_DIR/report.html and RUN_DIR/summary.md from every finished chain."""
    from prunus.report import write_report

    paths = write_report(ctx.run_dir, title=cfg.title or None)
    return StageResult(files={k: str(p) for k, p in paths.items()})
