"""Counting and evaluating a model: MACs and parameters, accuracy and loss, logit ensembles.

- `count(model, input_shape) -> Counts` (`counting.py`): MACs and parameters as benchmarks.md defines them.
- `evaluate(model, loader) -> {"acc", "loss", "n"}` (`evaluation.py`): the one evaluation loop.
- `LogitEnsemble(models)` (`ensemble.py`): several networks as one, by averaging logits.

Example:
    >>> import prunus
    >>> count(prunus.create_model("lenet5", in_channels=1), (1, 28, 28)).params
    61706
"""

from prunus.measure.counting import Counts as Counts
from prunus.measure.counting import count as count
from prunus.measure.ensemble import LogitEnsemble as LogitEnsemble
from prunus.measure.evaluation import evaluate as evaluate

__all__ = ["Counts", "LogitEnsemble", "count", "evaluate"]
