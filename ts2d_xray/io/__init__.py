"""Reading and writing images, labels and masks (I/O lives here, numerics elsewhere).

Readers return the types of :mod:`ts2d_xray.image` with their physical geometry;
writers never overwrite an input and never leave a half-written file.
"""

from ts2d_xray.io.image2d import read_image2d, write_image2d
from ts2d_xray.io.masks import read_masks, read_segment_colors, write_masks
from ts2d_xray.io.preview import write_preview
from ts2d_xray.io.projection import read_projection
from ts2d_xray.io.radiograph import read_radiograph
from ts2d_xray.io.volume import read_classmap, read_ct, read_labels

__all__ = [
    "read_classmap",
    "read_ct",
    "read_image2d",
    "read_labels",
    "read_masks",
    "read_projection",
    "read_radiograph",
    "read_segment_colors",
    "write_image2d",
    "write_masks",
    "write_preview",
]
