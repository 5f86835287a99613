"""Pipelines: recipes of registered stages (create, train, csgd, prune, finetune, compress, export,
bench, report), each in its own directory with an atomic completion record, resumable, swept over seeds x arms.

Example:
    >>> from prunus.pipeline import load_recipe, run_pipeline
    >>> plan = load_recipe("recipes/quickstart.yaml", {"data.subset": 1000})  # doctest: +SKIP
    >>> run_pipeline(plan, "runs/quick").ran  # doctest: +SKIP
    7
"""

# the built-in stages register themselves on import; stages.py itself imports none of them (no cycle)
import prunus.pipeline._compress_stage  # noqa: F401
import prunus.pipeline._model_stages  # noqa: F401
import prunus.pipeline._report_stage  # noqa: F401
import prunus.pipeline._train_stages  # noqa: F401
from prunus.pipeline.recipe import Plan as Plan
from prunus.pipeline.recipe import PlannedStage as PlannedStage
from prunus.pipeline.recipe import apply_sets as apply_sets
from prunus.pipeline.recipe import load_recipe as load_recipe
from prunus.pipeline.recipe import parse_recipe as parse_recipe
from prunus.pipeline.runner import RunSummary as RunSummary
from prunus.pipeline.runner import chain_records as chain_records
from prunus.pipeline.runner import read_record as read_record
from prunus.pipeline.runner import run_pipeline as run_pipeline
from prunus.pipeline.stages import StageConfig as StageConfig
from prunus.pipeline.stages import StageContext as StageContext
from prunus.pipeline.stages import StageResult as StageResult
from prunus.pipeline.stages import get_stage as get_stage
from prunus.pipeline.stages import list_stages as list_stages
from prunus.pipeline.stages import register_stage as register_stage

__all__ = [
    "Plan",
    "PlannedStage",
    "RunSummary",
    "StageConfig",
    "StageContext",
    "StageResult",
    "apply_sets",
    "chain_records",
    "get_stage",
    "list_stages",
    "load_recipe",
    "parse_recipe",
    "read_record",
    "register_stage",
    "run_pipeline",
]
