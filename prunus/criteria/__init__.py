"""Filter criteria: pure functions that score the channels of a coupled group (larger = keep).

Importing this package registers every built-in criterion: `l1`, `l2`, `fpgm` (= `dist-l2`),
`dist-l1`, `bn-scale`, `entropy`, `taylor` (needs data) and `random`. The contract is stated in
`Criterion`'s docstring: criteria only score; methods choose indices; the structure engine cuts.

Example:
    >>> from prunus.criteria import list_criteria
    >>> list_criteria()
    ['bn-scale', 'dist-l1', 'dist-l2', 'entropy', 'fpgm', 'l1', 'l2', 'random', 'taylor']
"""

from prunus.criteria import taylor as taylor
from prunus.criteria import weight as weight
from prunus.criteria.base import CRITERIA as CRITERIA
from prunus.criteria.base import REDUCTIONS as REDUCTIONS
from prunus.criteria.base import Criterion as Criterion
from prunus.criteria.base import DataBatch as DataBatch
from prunus.criteria.base import WeightCriterion as WeightCriterion
from prunus.criteria.base import create_criterion as create_criterion
from prunus.criteria.base import get_criterion as get_criterion
from prunus.criteria.base import list_criteria as list_criteria
from prunus.criteria.base import register_criterion as register_criterion
from prunus.criteria.base import score as score

__all__ = [
    "CRITERIA",
    "REDUCTIONS",
    "Criterion",
    "DataBatch",
    "WeightCriterion",
    "create_criterion",
    "get_criterion",
    "list_criteria",
    "register_criterion",
    "score",
]
