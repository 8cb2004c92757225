"""report.json follows the JSON Schema shipped in the package (ts2d_xray/configs/report.schema.json).

Real reports of every input kind, written by `ts2d-xray segment` with the bundled models
(a DICOM chest film, a flagged tibia film, a PNG without spacing, a TS2D projection, a CT)
and one of an array given to the API, validate against it; the schema itself is valid
draft 2020-12, and each report names the tool version, the model and its weights' SHA-256.
"""

from __future__ import annotations

import json
import warnings
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

jsonschema = pytest.importorskip("jsonschema")

from ts2d_xray.cli import main  # noqa: E402
from ts2d_xray.segment.result import REPORT_SCHEMA, REPORT_SCHEMA_VERSION, tool_version  # noqa: E402


def _schema() -> dict:
    return json.loads(files("ts2d_xray.configs").joinpath(REPORT_SCHEMA).read_text())


def _validate(report: dict) -> None:
    jsonschema.Draft202012Validator(_schema()).validate(report)


def test_the_schema_is_valid_and_shipped() -> None:
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["pattern"].startswith("^" + REPORT_SCHEMA_VERSION.split(".")[0])


def test_reports_of_real_inputs_validate(data: Path, tmp_path: Path) -> None:
    inputs = [data / "xray" / "dicom" / "siim_nih_cr_chest_monochrome2.dcm",
              data / "xray" / "dicom" / "pydicomdata_RG3_J2KR_cr_tibia_monochrome1_j2k.dcm",
              data / "xray" / "nih_cxr14" / "00000001_000.png",
              data / "projections" / "ts2d_samples" / "sample_s0332.nrrd",
              data / "ct" / "ts_example" / "ct_small.nii.gz"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["-q", "segment", *map(str, inputs), "-o", str(tmp_path), "--format", "json"]) == 0
    reports = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/report.json"))]
    assert len(reports) == len(inputs)
    for report in reports:
        _validate(report)
        assert report["schema_version"] == REPORT_SCHEMA_VERSION and report["tool_version"] == tool_version()
        assert len(report["model_sha256"]) == 64
    kinds = {r["input_kind"]: r for r in reports}
    assert kinds["ct"]["image"]["file_grid"] is None  # CT results stay in the CT's space
    assert kinds["projection"]["image"]["file_grid"]["size"] == [269, 1, 505]
    assert any(r["trust"]["flagged"] for r in reports) and any(r["cardiothoracic_ratio"] for r in reports)


def test_report_of_an_array_validates() -> None:
    from ts2d_xray import Segmenter

    image = np.zeros((64, 64), np.float32)
    image[16:48, 8:56] = 1.0
    with Segmenter("ts2d-xray-xray", device="cpu", structures=["lungs", "heart"]) as seg:
        report = seg(image, spacing=3.0).report()
    _validate(report)
    assert report["source"] is None and report["image"]["file_grid"] is None
    assert set(report["structures"]) == {"heart", "lung_upper_lobe_left", "lung_lower_lobe_left",
                                         "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right"}
