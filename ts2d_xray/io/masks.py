"""Write 2D masks and images where 3D tools place them, and read 2D Slicer segmentations.

Every 2D item is stored as a single-slice 3D volume in LPS space (mm), so that 3D Slicer,
ITK and nibabel put it where it lies in the patient: index axis ``i`` = columns
(``plane.col_dir``, ``plane.spacing[1]`` mm), ``j`` = rows (``plane.row_dir``,
``plane.spacing[0]`` mm), ``k`` = a singleton axis along the plane normal
``col_dir x row_dir`` (:data:`NORMAL_SPACING_MM`).  The origin is ``plane.origin`` (LPS
of the centre of pixel (0, 0)), or (0, 0, 0) when unknown (radiographs); NRRD files then
carry :data:`ORIGIN_UNKNOWN_FIELD` so that :func:`read_masks` gives back ``None``.
Image NRRDs follow TS2D's own axis order instead (see :func:`write_image2d`).

Writers never modify their inputs, create missing parent folders and write atomically:
data go to a hidden temporary file in the destination folder, renamed onto the
destination (``os.replace``) once complete and removed on any error, so no half-written
output ever exists.

Example:
    >>> import tempfile, numpy as np
    >>> from ts2d_xray.image import Masks, Plane
    >>> plane = Plane((4, 3), (1.0, 1.0), col_dir=(1, 0, 0), row_dir=(0, 0, -1))
    >>> masks = Masks(np.ones((1, 4, 3), bool), ("heart",), plane)
    >>> out = write_masks(masks, Path(tempfile.mkdtemp()) / "masks.seg.nrrd")
    >>> read_masks(out).names
    ('heart',)
"""

from __future__ import annotations

import json
import logging
import os
from os import PathLike
from pathlib import Path

import numpy as np

from ts2d_xray import labels
from ts2d_xray.errors import InputError
from ts2d_xray.image import Image2D, Masks, Plane
from ts2d_xray.io.files import atomic_paths, new_folder, sidecar_path
from ts2d_xray.kinds import IMAGE_WRITE_SUFFIXES, MASK_WRITE_SUFFIXES, format_suffix

__all__ = ["read_masks", "read_segment_colors", "write_image2d", "write_masks"]

logger = logging.getLogger(__name__)

#: Thickness in mm given to the singleton slice axis (a 2D image has none; Slicer needs > 0).
NORMAL_SPACING_MM = 1.0
#: Custom NRRD field set to "1" when the plane's origin is unknown and (0, 0, 0) was written.
ORIGIN_UNKNOWN_FIELD = "TS2D_OriginUnknown"
_MASK_FORMATS = (*MASK_WRITE_SUFFIXES, "a folder path without suffix")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _ijk_to_lps(plane: Plane) -> np.ndarray:
    """4x4 matrix from index (i = column, j = row, k = normal) to LPS mm."""
    col, row = np.asarray(plane.col_dir, float), np.asarray(plane.row_dir, float)
    normal = np.cross(col, row)
    m = np.eye(4)
    m[:3, 0] = col * plane.spacing[1]
    m[:3, 1] = row * plane.spacing[0]
    m[:3, 2] = normal / np.linalg.norm(normal) * NORMAL_SPACING_MM + 0.0  # + 0.0: no "-0" in headers
    m[:3, 3] = (0.0, 0.0, 0.0) if plane.origin is None else plane.origin
    return m


def _write_nifti(data: np.ndarray, plane: Plane, path: Path, meta: dict) -> None:
    """Save ``(x=columns, y=rows, z=1, t)`` data as NIfTI, plus ``meta`` and the geometry as a JSON sidecar."""
    meta = {**meta, "shape_hw": list(plane.shape), "spacing_mm": list(plane.spacing),
            "spacing_order": "(row, column), as DICOM PixelSpacing", "orientation": list(plane.orientation),
            "col_dir_lps": list(plane.col_dir), "row_dir_lps": list(plane.row_dir),
            "origin_lps_mm": None if plane.origin is None else list(plane.origin)}
    m = _ijk_to_lps(plane)
    try:
        import nibabel as nib
    except ImportError:
        nib = None
    with atomic_paths(path, sidecar_path(path)) as (temp, temp_json):
        if nib is not None:
            affine = _LPS_TO_RAS @ m  # NIfTI stores RAS
            image = nib.Nifti1Image(data, affine)
            image.set_qform(affine, code=1)
            image.set_sform(affine, code=1)
            image.header.set_xyzt_units("mm")
            nib.save(image, str(temp))
        else:
            import SimpleITK as sitk

            image = sitk.GetImageFromArray(data.transpose(3, 2, 1, 0), isVector=False)  # 4D (t, z, y, x)
            image.SetSpacing((plane.spacing[1], plane.spacing[0], NORMAL_SPACING_MM, 1.0))
            image.SetOrigin((*m[:3, 3], 0.0))
            direction = np.eye(4)
            direction[:3, :3] = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0)
            image.SetDirection(direction.ravel())
            sitk.WriteImage(image, str(temp), useCompression=True)
        temp_json.write_text(json.dumps(meta, indent=2))


def mask_format(path: str | PathLike) -> str:
    """The mask format :func:`write_masks` picks for ``path``: ``.seg.nrrd``, ``.nii``, ``.nii.gz`` or ``""`` (PNG folder).

    Raises ValueError for any other suffix, and FileExistsError for a PNG folder that
    exists and is not empty, so callers can check outputs before any work.
    """
    path = Path(path)
    kind = format_suffix(path)
    if kind not in (".seg.nrrd", ".nii", ".nii.gz", ""):
        raise ValueError(f"{path}: cannot write masks as {kind!r}; supported: {', '.join(_MASK_FORMATS)}")
    if kind == "" and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path}: exists and is not an empty folder; choose a new folder for the PNG masks")
    return kind


def image_format(path: str | PathLike) -> str:
    """The image format :func:`write_image2d` picks for ``path``; ValueError for an unsupported suffix."""
    path = Path(path)
    kind = format_suffix(path)
    if kind not in IMAGE_WRITE_SUFFIXES:
        raise ValueError(f"{path}: cannot write an image as {kind!r}; supported: {', '.join(IMAGE_WRITE_SUFFIXES)}")
    return kind


def write_masks(masks: Masks, path: str | PathLike) -> Path:
    """Write multi-label 2D masks; the format follows the suffix of ``path``.

    * ``.seg.nrrd``: a 3D Slicer segmentation (written with slicerio), one segment per
      structure in ``masks.names`` order: ID and name = the structure name, colour from
      the label catalog (else a fixed fallback colour), label value, layer and extent.
      Overlapping structures go to different layers, packed greedily (a structure
      joins the first layer where it overlaps nothing); empty masks are kept.
    * ``.nii`` / ``.nii.gz``: uint8 0/1 data of shape ``(x=W columns, y=H rows, z=1,
      t=K structures)``, one volume per structure along the 4th dimension, geometry in
      the affine; plus a sidecar ``<name>.json`` listing the structures in order.
    * no suffix: a new folder with ``<name>.png`` (8-bit, 0/255) per structure and
      ``structures.json`` (names, colours, spacing, orientation).  An existing
      non-empty folder raises FileExistsError.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    kind = mask_format(path)
    if kind == ".seg.nrrd":
        _write_seg_nrrd(masks, path)
    elif kind in (".nii", ".nii.gz"):
        structures = [{"index": n, "name": name, "color": labels.display_color(name)} for n, name in enumerate(masks.names)]
        layout = "x = columns, y = rows, z = 1 (plane normal), t = structure index; 1 = inside"
        data = masks.array.transpose(2, 1, 0)[:, :, None, :].astype(np.uint8)  # (W, H, 1, K)
        _write_nifti(data, masks.plane, path, {"layout": layout, "structures": structures})
    else:
        _write_png_folder(masks, path)
    logger.info("wrote %d masks to %s", len(masks.names), path)
    return path


def _write_seg_nrrd(masks: Masks, path: Path) -> None:
    import slicerio

    h, w = masks.plane.shape
    seg = slicerio.create_segmentation((w, h, 1), _ijk_to_lps(masks.plane), dtype="uint8")
    seg["containedRepresentationNames"] = ["Binary labelmap"]
    if masks.plane.origin is None:
        seg[ORIGIN_UNKNOWN_FIELD] = "1"
    for name, mask in zip(masks.names, masks.array):
        color = [float(f"{c / 255:.6g}") for c in labels.display_color(name)]  # 6 digits, as Slicer writes
        fields = {"id": name, "name": name, "color": color, "nameAutoGenerated": False, "colorAutoGenerated": False}
        # add_segment packs greedily: the first layer where the mask overlaps nothing.
        segment = slicerio.add_segment(seg, mask.T[:, :, None], fields)
        # Slicer gives every segment of a shared layer the layer's extent; per-segment
        # extents can crop the other segments of the layer in some Slicer versions.
        segment["extent"] = [0, w - 1, 0, h - 1, 0, 0]
    with atomic_paths(path) as (temp,):
        slicerio.write_segmentation(str(temp), seg)


def _write_png_folder(masks: Masks, folder: Path) -> None:
    from PIL import Image

    for name in masks.names:
        if name in ("", ".", "..") or Path(name).name != name:
            raise ValueError(f"structure name {name!r} cannot be used as a PNG file name in {folder}")
    meta = {"structures": [{"name": n, "file": f"{n}.png", "color": labels.display_color(n)} for n in masks.names],
            "shape_hw": list(masks.plane.shape), "spacing_mm": list(masks.plane.spacing),
            "spacing_order": "(row, column), as DICOM PixelSpacing", "orientation": list(masks.plane.orientation)}
    with new_folder(folder) as temp:
        for name, mask in zip(masks.names, masks.array):
            Image.fromarray(mask.astype(np.uint8) * 255).save(temp / f"{name}.png")
        (temp / "structures.json").write_text(json.dumps(meta, indent=2))


def _read_segmentation(path: Path, skip_voxels: bool = False) -> tuple[dict, list[str]]:
    """slicerio's segmentation dict and the segment names (unique) of a ``.seg.nrrd``."""
    import slicerio

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such segmentation file")
    try:
        seg = slicerio.read_segmentation(str(path), skip_voxels=skip_voxels)
    except (OSError, ValueError) as e:
        raise InputError(path, f"not a readable 3D Slicer segmentation ({e})") from e
    names = [s.get("name") or s["id"] for s in seg["segments"]]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(path, f"segment names must be unique, repeated: {', '.join(repeated)}")
    return seg, names


def read_masks(path: str | PathLike) -> Masks:
    """Read a single-slice 3D Slicer segmentation (``.seg.nrrd``, ours or Slicer's).

    The index axis of size 1 is the plane normal; of the other two, the first is the
    columns and the second the rows (``(i, j)`` in our files, ``(i, k)`` in TS2D's
    layout).  Spacing, directions and origin (LPS mm) come from the header.

    Returns:
        Masks: ``(K, H, W)`` bool in segment order, overlaps kept.

    Raises:
        InputError (a ValueError): not a segmentation, no axis of size 1 (a 3D
            segmentation), or repeated segment names.
    """
    import slicerio

    path = Path(path)
    seg, names = _read_segmentation(path)
    spatial = seg["voxels"].shape[-3:]
    singletons = [a for a in range(3) if spatial[a] == 1]
    if not singletons:
        size = " x ".join(map(str, spatial))
        raise InputError(path, f"a 3D segmentation of {size} voxels, not a single-slice (2D) one")
    normal = singletons[-1]
    col_axis, row_axis = (a for a in range(3) if a != normal)
    m = np.asarray(seg["ijkToLPS"], float)
    col_vec, row_vec = m[:3, col_axis], m[:3, row_axis]
    col_sp, row_sp = float(np.linalg.norm(col_vec)), float(np.linalg.norm(row_vec))
    plane = Plane(
        shape=(spatial[row_axis], spatial[col_axis]),
        spacing=(row_sp, col_sp),
        col_dir=tuple(float(v) for v in col_vec / col_sp),
        row_dir=tuple(float(v) for v in row_vec / row_sp),
        origin=None if str(seg.get(ORIGIN_UNKNOWN_FIELD)).strip() == "1" else tuple(float(v) for v in m[:3, 3]),
    )
    array = np.zeros((len(names), *plane.shape), bool)
    for n, segment in enumerate(seg["segments"]):
        array[n] = np.squeeze(slicerio.segment_mask(seg, segment), axis=normal).T  # (cols, rows) -> (H, W)
    return Masks(array, tuple(names), plane)


def read_segment_colors(path: str | PathLike) -> dict[str, tuple[int, int, int]]:
    """Segment name -> display colour (R, G, B, 0-255) of a ``.seg.nrrd`` file, in segment order.

    Works for 3D segmentations too (voxels are not read).  A segment without a colour
    gets the colour :func:`write_masks` would give it.
    """
    seg, names = _read_segmentation(Path(path), skip_voxels=True)
    return {
        name: tuple(int(round(c * 255)) for c in s["color"]) if "color" in s else labels.display_color(name)
        for name, s in zip(names, seg["segments"])
    }


def write_image2d(image: Image2D, path: str | PathLike) -> Path:
    """Write a 2D image; the format follows the suffix of ``path``.

    * ``.nrrd``: TS2D's layout, float32, gzip: a 4D NRRD of sizes ``(C, W, 1, H)`` with
      kinds ``vector domain domain domain`` in LPS space: axis 1 = columns
      (``col_dir``), axis 2 = the singleton plane normal (1 mm), axis 3 = rows
      (``row_dir``), as TS2D stores a projection of an (x, y, z) volume along y.
      The channel names are in a custom field, e.g. ``channels:=mean max``.
    * ``.nii`` / ``.nii.gz``: float32 ``(x=W, y=H, z=1, t=C)`` with the geometry in the
      affine, plus a sidecar ``<name>.json`` with the channel names.
    * ``.png``: an 8-bit preview, as :func:`write_preview` without masks.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    kind = image_format(path)
    if kind == ".png":
        from ts2d_xray.io.preview import write_preview

        return write_preview(image, path)
    if kind == ".nrrd":
        _write_image_nrrd(image, path)
    else:
        data = image.array.astype(np.float32).transpose(2, 1, 0)[:, :, None, :]  # (W, H, 1, C)
        layout = "x = columns, y = rows, z = 1 (plane normal), t = channel"
        _write_nifti(data, image.plane, path, {"layout": layout, "channels": list(image.channels)})
    logger.info("wrote %s image to %s", "x".join(map(str, image.array.shape)), path)
    return path


def _write_image_nrrd(image: Image2D, path: Path) -> None:
    import nrrd

    if any(not c or any(ch.isspace() for ch in c) for c in image.channels):
        raise ValueError(f"channel names must be non-empty and without spaces for NRRD, got {image.channels!r}")
    m = _ijk_to_lps(image.plane)
    header = {
        "type": "float",
        "dimension": 4,
        "space": "left-posterior-superior",
        "kinds": ["vector", "domain", "domain", "domain"],
        # One row per axis: none for the channels, then columns, normal, rows (TS2D's order).
        "space directions": np.vstack([np.full(3, np.nan), m[:3, 0], m[:3, 2], m[:3, 1]]),
        "space origin": m[:3, 3],
        "encoding": "gzip",
        "channels": list(image.channels),
    }
    if image.plane.origin is None:
        header[ORIGIN_UNKNOWN_FIELD] = "1"
    data = image.array.astype(np.float32).transpose(0, 2, 1)[:, :, None, :]  # (C, W, 1, H)
    with atomic_paths(path) as (temp,):
        nrrd.write(str(temp), data, header, custom_field_map={"channels": "string list"}, index_order="F")
