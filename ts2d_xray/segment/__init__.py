"""Inference: segment CTs, coronal projections and radiographs with a model bundle.
"""

from ts2d_xray.segment.segmenter import (SegmentOptions, Segmenter, default_model)
from ts2d_xray.segment.result import (Result)

__all__ = ["Result", "SegmentOptions", "Segmenter", "default_model"]
