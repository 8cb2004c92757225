"""The data set format: nnU-Net v2 raw data sets of 2D images with multi-label masks
(written by ``synth build``, read by training), and its export to upstream nnU-Net's
region format.

Modules, by idea: :mod:`~ts2d_xray.dataset.format` (file names, constants,
``dataset.json``), :mod:`~ts2d_xray.dataset.write` (cases and their completion
markers), :mod:`~ts2d_xray.dataset.read` (open, check and read) and
:mod:`~ts2d_xray.dataset.regions` (the region-format export).  ``KINDS``, ``Kind``,
``CHANNELS`` and ``NNUNET_CHANNEL_NAMES`` live in :mod:`ts2d_xray.kinds`, ``json_default``
in :mod:`ts2d_xray.io.files`; they are re-exported here for users.
"""

from ts2d_xray.dataset.format import (
    DISPLAY,
    FILE_ENDING,
    FORMAT_VERSION,
    LABEL_LAYOUT,
    case_files,
    dataset_json,
    image_name,
    is_complete,
    label_name,
)
from ts2d_xray.dataset.read import Dataset, iter_cases, load_dataset, read_case, validate_case
from ts2d_xray.dataset.regions import MAX_CODES, export_regions
from ts2d_xray.dataset.write import finalize, write_case
from ts2d_xray.io.files import json_default
from ts2d_xray.kinds import CHANNELS, KINDS, NNUNET_CHANNEL_NAMES, Kind

__all__ = ["CHANNELS", "DISPLAY", "Dataset", "FILE_ENDING", "FORMAT_VERSION", "KINDS", "Kind", "LABEL_LAYOUT", "MAX_CODES", "NNUNET_CHANNEL_NAMES", "case_files", "dataset_json", "export_regions", "finalize", "image_name", "is_complete", "iter_cases", "json_default", "label_name", "load_dataset", "read_case", "validate_case", "write_case"]
