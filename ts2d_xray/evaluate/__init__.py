"""Evaluation of multi-label 2D masks: Dice, HD95 in mm and presence, per structure and case.
"""

from ts2d_xray.evaluate.metrics import (
    HD95_PERCENTILE,
    EvaluationReport,
    StructureScore,
    area_mm2,
    boundary,
    dice,
    evaluate,
    hd95,
    read_mapping,
    score_masks,
    surface_distances,
)

__all__ = ["EvaluationReport", "HD95_PERCENTILE", "StructureScore", "area_mm2", "boundary", "dice", "evaluate", "hd95", "read_mapping", "score_masks", "surface_distances"]
