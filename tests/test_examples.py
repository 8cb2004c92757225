"""Example data: where the real data folder is found, and the message when it is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

import ts2d_xray
from ts2d_xray.examples import SHARED_DATA_ENV, chest_radiograph, shared_data, shared_data_dir


def test_the_environment_variable_overrides_the_checkout_default(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SHARED_DATA_ENV, raising=False)
    assert shared_data_dir() == Path(ts2d_xray.__file__).resolve().parents[2] / "shared" / "data"
    (tmp_path / "xray" / "nih_cxr14").mkdir(parents=True)
    (tmp_path / "xray" / "nih_cxr14" / "00000001_000.png").write_bytes(b"png")
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path))
    assert shared_data_dir() == tmp_path
    assert shared_data() == tmp_path
    assert shared_data("xray", "nih_cxr14") == tmp_path / "xray" / "nih_cxr14"
    assert chest_radiograph(required=True) == tmp_path / "xray" / "nih_cxr14" / "00000001_000.png"


def test_a_missing_folder_is_none_or_an_error_that_says_what_to_set(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path / "absent"))
    assert shared_data("ct") is None
    assert chest_radiograph() is None
    with pytest.raises(FileNotFoundError, match=rf"absent: set {SHARED_DATA_ENV} to the shared data folder"):
        shared_data("ct", required=True)
    tmp_path.joinpath("absent").mkdir()
    with pytest.raises(FileNotFoundError, match=r"absent/ct: set"):
        shared_data("ct", required=True)
