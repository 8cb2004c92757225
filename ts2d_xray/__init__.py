"""ts2d-xray: anatomy segmentation in 2D, on coronal CT projections and radiographs.

Conventions are stated in :mod:`ts2d_xray.image`: LPS physical space in mm, 2D arrays
``(C, H, W)`` head up, and a display convention (``"radiograph"``: patient's right on
the image left, the default; ``"ts2d"``: patient's left on the image left).

Example:
    >>> import ts2d_xray as tx
    >>> ct = tx.read_ct("ct.nii.gz")                                   # doctest: +SKIP
    >>> labels = tx.read_labels("seg.nii.gz", classmap="v2", reference=ct)  # doctest: +SKIP
    >>> image, masks = tx.project(ct, labels, spacing=1.5)             # doctest: +SKIP
    >>> tx.write_masks(masks, "masks.seg.nrrd")                        # doctest: +SKIP
    >>> with tx.Segmenter(model="my-model") as seg:                    # doctest: +SKIP
    ...     result = seg("chest.dcm")
    ...     result.save("out/chest")
"""

from ts2d_xray import labels
from ts2d_xray.errors import InputError
from ts2d_xray.image import Grid, Image2D, LabelMap, Masks, Plane, Volume
from ts2d_xray.orientation import to_display
from ts2d_xray.io import (
    read_ct,
    read_image2d,
    read_labels,
    read_masks,
    read_projection,
    read_radiograph,
    write_image2d,
    write_masks,
    write_preview,
)
from ts2d_xray.projection import project, project_ct, project_labels, resample
from ts2d_xray.segment import Result, SegmentOptions, Segmenter

__version__ = "0.1.0"

__all__ = [
    "Grid",
    "Image2D",
    "InputError",
    "LabelMap",
    "Masks",
    "Plane",
    "Result",
    "SegmentOptions",
    "Segmenter",
    "Volume",
    "labels",
    "project",
    "project_ct",
    "project_labels",
    "read_ct",
    "read_image2d",
    "read_labels",
    "read_masks",
    "read_projection",
    "read_radiograph",
    "resample",
    "to_display",
    "write_image2d",
    "write_masks",
    "write_preview",
]
