"""Reading and writing images, labels and masks (I/O lives here, numerics elsewhere).

Readers return the types of :mod:`ts2d_xray.image` with their physical geometry;
writers never overwrite an input and never leave a half-written file.

Modules, by idea: ``files`` (atomic writes, staged folders, JSON), ``volume`` (CTs and
3D labels), ``radiograph`` and ``projection`` (the two kinds of 2D image), ``image2d``
(read either kind, write one), ``masks`` (2D masks: Slicer segmentations, NIfTI, PNG
folders), ``mask_sources`` (masks from whatever holds them), ``preview`` (overlay PNGs);
and the steps they share: ``itk`` (SimpleITK headers, pixels and planes), ``itk_data`` (checks
that a file's pixel data is all there and intact), ``image_file`` (a 2D
file's format, the display flip) and ``slice3d`` (the single-slice LPS layout).
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
