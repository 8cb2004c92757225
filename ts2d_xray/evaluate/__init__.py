"""Evaluation of multi-label 2D masks: Dice, HD95 in mm and presence, per structure and case.

HD95 comes in two variants (:data:`HD95_VARIANTS`): ``"pooled"`` (the default), the 95th
percentile of both directed surface distances pooled, and ``"max-directed"``, the larger
of the two directed 95th percentiles, as MONAI and DeepMind's surface-distance compute it.

Modules, by idea: :mod:`~ts2d_xray.evaluate.metrics` (the metrics and their
conventions), :mod:`~ts2d_xray.evaluate.cases` (:func:`evaluate`: pairing, reading,
one grid, scoring), :mod:`~ts2d_xray.evaluate.align` (bringing masks onto a grid),
:mod:`~ts2d_xray.evaluate.mapping` (a user's mask names -> structures) and
:mod:`~ts2d_xray.evaluate.report` (:class:`EvaluationReport`: summary, table, files).
"""

from ts2d_xray.evaluate.cases import evaluate
from ts2d_xray.evaluate.mapping import read_mapping
from ts2d_xray.evaluate.metrics import (
    HD95_PERCENTILE,
    HD95_VARIANTS,
    HD95Variant,
    StructureScore,
    area_mm2,
    boundary,
    dice,
    hd95,
    score_masks,
    surface_distances,
)
from ts2d_xray.evaluate.report import EvaluationReport

__all__ = ["EvaluationReport", "HD95_PERCENTILE", "HD95_VARIANTS", "HD95Variant", "StructureScore", "area_mm2", "boundary", "dice", "evaluate", "hd95", "read_mapping", "score_masks", "surface_distances"]
