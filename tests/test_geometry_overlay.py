"""Mask files of every 2D input in the shared data lie exactly where ITK (and so 3D Slicer) puts the input.

For each radiograph (DICOM CR/DX, PNG) and each 2D TS2D projection in ``TS2D_XRAY_DATA``,
SimpleITK reads the input and each written mask file (``masks.seg.nrrd`` and every
``segmentations/*.nii.gz``) with the same size, spacing, origin and direction; a 2D
input is compared as Slicer loads it, a third axis of size 1 and 1 mm along z.  The
anatomical plane (spacing at the patient, orientation) stays in the report and in our
own readers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from ts2d_xray.examples import shared_data_dir
from ts2d_xray.segment.inputs import inspect_input

DATA = shared_data_dir() if shared_data_dir().is_dir() else None
STRUCTURES = ["lungs", "heart"]


def _inputs() -> list[Path]:
    if DATA is None:
        return []
    files = [*sorted((DATA / "xray" / "dicom").glob("*.dcm")), *sorted((DATA / "xray" / "nih_cxr14").glob("*.png")),
             *sorted((DATA / "projections" / "ts2d_samples").glob("*.nrrd"))]
    return [f for f in files if inspect_input(f).kind != "ct"]


def _itk_geometry(path: Path) -> tuple[tuple, np.ndarray, np.ndarray, np.ndarray]:
    """Size, spacing, origin, direction SimpleITK reads, a 2D image embedded in 3D as Slicer loads it."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    dim = reader.GetDimension()
    direction = np.eye(3)
    direction[:dim, :dim] = np.reshape(reader.GetDirection(), (dim, dim))
    pad = 3 - dim
    return (tuple(reader.GetSize()) + (1,) * pad, np.r_[reader.GetSpacing(), [1.0] * pad],
            np.r_[reader.GetOrigin(), [0.0] * pad], direction)


@pytest.fixture(scope="module")
def segmenter():
    from ts2d_xray import Segmenter

    with Segmenter(device="cpu", structures=STRUCTURES) as seg:  # the default model of each input's kind
        yield seg


@pytest.mark.skipif(DATA is None, reason="shared data folder (TS2D_XRAY_DATA) not available")
@pytest.mark.parametrize("path", _inputs(), ids=lambda p: p.name)
def test_mask_files_have_the_inputs_itk_geometry(segmenter, path, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # assumed spacings and orientations are warned about elsewhere
        result = segmenter(path)
    written = result.save(tmp_path, ["seg.nrrd", "nifti", "json"])
    files = [written[0], *sorted(written[1].glob("*.nii.gz"))]
    assert len(files) == 1 + len(result.names)
    size, spacing, origin, direction = _itk_geometry(path)
    for f in files:
        f_size, f_spacing, f_origin, f_direction = _itk_geometry(f)
        assert f_size == size, f.name
        np.testing.assert_allclose(f_spacing, spacing, rtol=1e-6, err_msg=f.name)
        np.testing.assert_allclose(f_origin, origin, atol=1e-4, err_msg=f.name)
        np.testing.assert_allclose(f_direction, direction, atol=1e-5, err_msg=f.name)
    report = result.report()
    assert report["image"]["file_grid"]["size"] == list(size)


@pytest.mark.skipif(DATA is None, reason="shared data folder (TS2D_XRAY_DATA) not available")
def test_our_readers_keep_the_anatomical_plane(segmenter, tmp_path):
    """seg.nrrd and segmentations/ carry the file's geometry for ITK, and the patient's plane for ts2d-xray."""
    from ts2d_xray.io import read_masks
    from ts2d_xray.io.mask_sources import read_mask_source

    path = DATA / "xray" / "dicom" / "pydicomdata_RG1_UNCR_cr_chest_monochrome1.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = segmenter(path)
    out = tmp_path / "out"
    result.save(out, ["seg.nrrd", "nifti"])
    back = read_masks(out / "masks.seg.nrrd")
    assert back.plane == result.masks.plane and back.plane.spacing[0] < 0.5  # ITK says 1 mm, the patient 0.22 mm
    np.testing.assert_array_equal(back.array, result.masks.array)
    folder = read_mask_source(out / "segmentations").masks
    assert folder.plane.spacing == result.masks.plane.spacing
    np.testing.assert_array_equal(folder.array, result.masks.array)
