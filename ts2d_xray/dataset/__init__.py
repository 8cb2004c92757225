"""The data set format: nnU-Net v2 raw data sets of 2D images with multi-label masks
(written by ``synth build``, read by training), and its export to upstream nnU-Net's
region format.
"""

from ts2d_xray.dataset.format import (
    CHANNELS,
    DISPLAY,
    FILE_ENDING,
    FORMAT_VERSION,
    KINDS,
    LABEL_LAYOUT,
    NNUNET_CHANNEL_NAMES,
    Dataset,
    Kind,
    case_files,
    dataset_json,
    finalize,
    image_name,
    is_complete,
    iter_cases,
    json_default,
    label_name,
    load_dataset,
    read_case,
    validate_case,
    write_case,
)
from ts2d_xray.dataset.regions import MAX_CODES, export_regions

__all__ = ["CHANNELS", "DISPLAY", "Dataset", "FILE_ENDING", "FORMAT_VERSION", "KINDS", "Kind", "LABEL_LAYOUT", "MAX_CODES", "NNUNET_CHANNEL_NAMES", "case_files", "dataset_json", "export_regions", "finalize", "image_name", "is_complete", "iter_cases", "json_default", "label_name", "load_dataset", "read_case", "validate_case", "write_case"]
