"""``ts2d-xray segment --scheduler``: a dask cluster writes what the local run writes.

The inputs are the shared real radiographs (NIH ChestX-ray14 PNGs, DICOM CR/DX files)
and one corrupt PNG whose header reads but whose pixels do not: it fails alone, in both
runs, with the same one-line error, and leaves no output folder.

What "the same" means (docs/scaling.md, "Cluster inference"):

* ``report.json``: byte-identical once the value of ``timings_s`` (seconds measured in
  that run) is blanked; everything else, ``source`` and ``model_sha256`` included, is
  compared byte for byte.
* ``overlay.png``: byte-identical.
* ``masks.seg.nrrd``: the same masks and header fields (its comment line carries the
  time of writing); ``masks.dcm``: the same pixel data and segments (a DICOM SEG gets new
  UIDs and dates each time it is written).
* stdout: the same lines in the same order, once the ``(N.N s)`` timing is blanked.
"""

from __future__ import annotations

import re
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import model_fixtures as mf
from ts2d_xray.cli import main
from ts2d_xray.parallel import Done, local_workers, open_runner
from ts2d_xray.segment import batch

pytestmark = pytest.mark.filterwarnings("ignore:.*(assum|fallback|spans).*:UserWarning")

RADIOGRAPHS = ("xray/nih_cxr14", "xray/dicom/siim_nih_cr_chest_monochrome2.dcm",
               "xray/dicom/highdicom_dx_dog_chest_monochrome1.dcm")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TS2D_XRAY_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def xray_model(tmp_path_factory) -> Path:
    return mf.deterministic_bundle(tmp_path_factory.mktemp("models") / "xray-test", kind="xray", spacing=2.0)


@pytest.fixture
def inputs(data, tmp_path) -> list[str]:
    """The shared radiographs, plus a PNG cut short: its header reads, its pixels do not."""
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes((data / "xray" / "nih_cxr14" / "00000001_000.png").read_bytes()[:3000])
    return [str(data / r) for r in RADIOGRAPHS] + [str(corrupt)]


def _segment(capsys, inputs: list[str], out: Path, model: Path, *extra: str) -> tuple[int, list[str], str]:
    code = main(["segment", *inputs, "-o", str(out), "--model", str(model), "--device", "cpu", *extra])
    captured = capsys.readouterr()
    lines = [re.sub(r" \(\d+\.\d s\) -> .*$", "", line) for line in captured.out.splitlines()]
    return code, lines, captured.err


def _report_bytes(path: Path) -> bytes:
    """report.json with the value of ``timings_s`` (this run's seconds) blanked; every other byte kept."""
    return re.sub(rb'("timings_s": )\{[^}]*\}', rb"\1{}", path.read_bytes())


def assert_same_outputs(local: Path, cluster: Path) -> None:
    import nrrd
    import pydicom

    assert sorted(p.name for p in cluster.iterdir()) == sorted(p.name for p in local.iterdir())
    for case in local.iterdir():
        files = sorted(p.name for p in case.iterdir())
        assert sorted(p.name for p in (cluster / case.name).iterdir()) == files
        assert _report_bytes(cluster / case.name / "report.json") == _report_bytes(case / "report.json")
        assert (cluster / case.name / "overlay.png").read_bytes() == (case / "overlay.png").read_bytes()
        (a, ha), (b, hb) = nrrd.read(str(case / "masks.seg.nrrd")), nrrd.read(str(cluster / case.name / "masks.seg.nrrd"))
        assert np.array_equal(a, b) and a.any()
        assert {k: str(v) for k, v in ha.items()} == {k: str(v) for k, v in hb.items()}
        if "masks.dcm" in files:
            sa, sb = pydicom.dcmread(case / "masks.dcm"), pydicom.dcmread(cluster / case.name / "masks.dcm")
            assert np.array_equal(sa.pixel_array, sb.pixel_array)
            assert [s.SegmentLabel for s in sa.SegmentSequence] == [s.SegmentLabel for s in sb.SegmentSequence]


def test_a_local_cluster_writes_what_the_local_run_writes(inputs, xray_model, tmp_path, capsys):
    from distributed import LocalCluster

    local = _segment(capsys, inputs, tmp_path / "local", xray_model)
    loads = sum(batch.LOADS.values())
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        remote = _segment(capsys, inputs, tmp_path / "cluster", xray_model, "--scheduler", cluster.scheduler_address)
    # 4 radiographs written, the corrupt one failed alone: exit 1, its one line, no folder.
    assert local[0] == remote[0] == 1
    assert local[1] == remote[1] and len(local[1]) == 4 and all("model xray-test" in line for line in local[1])
    for err in (local[2], remote[2]):
        errors = [line for line in err.splitlines() if "error:" in line]
        assert errors == [f"ts2d-xray segment: error: {inputs[-1]}: corrupt PNG file (Truncated File Read)"]
    assert_same_outputs(tmp_path / "local", tmp_path / "cluster")
    assert len(list((tmp_path / "cluster").iterdir())) == 4  # nothing for corrupt.png, no staging folder
    # Two worker threads in this process share its cache: the model was loaded once for the run.
    assert sum(batch.LOADS.values()) == loads + 1
    assert not batch._segmenters  # released after the run


def test_one_bad_input_on_a_cluster_exits_2_with_its_line(inputs, xray_model, tmp_path, capsys):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        code, lines, err = _segment(capsys, inputs[-1:], tmp_path / "out", xray_model,
                                    "--scheduler", cluster.scheduler_address)
    assert code == 2 and lines == []
    assert err.strip().splitlines()[-1] == f"ts2d-xray segment: error: {inputs[-1]}: corrupt PNG file " \
                                          "(Truncated File Read)"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("scheduler, message", [
    ("local:0", "expected local or local:N with N >= 1"),
    ("local:two", "expected local or local:N with N >= 1"),
])
def test_a_bad_scheduler_exits_2_and_writes_nothing(inputs, xray_model, tmp_path, capsys, scheduler, message):
    code, lines, err = _segment(capsys, inputs[:1], tmp_path / "out", xray_model, "--scheduler", scheduler)
    assert code == 2 and lines == [] and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_local_workers_reads_the_flag():
    assert local_workers("local:3") == 3 and local_workers("local") >= 1
    assert local_workers("tcp://host:8786") is None and local_workers("localhost:8786") is None


def test_runner_keeps_order_and_each_items_failure():
    with open_runner(None) as run:
        done = list(run(int, ["1", "x", "3"], ordered=True))
    assert [d.index for d in done] == [0, 1, 2] and [d.value for d in done] == [1, None, 3]
    assert isinstance(done[1].error, ValueError) and not done[1].lost and done[1].describe().startswith("ValueError")


def test_a_dead_pool_worker_fails_its_item_only():
    """``os._exit`` kills the worker process: the item is lost, the runner returns."""
    import os

    with open_runner(None, workers=2) as run:
        done = sorted(run(os._exit, [3]), key=lambda d: d.index)
    assert done == [Done(0, error=done[0].error, lost=True)] and "worker failed" in done[0].describe()


@pytest.mark.slow
def test_worker_processes_load_the_model_once_and_match_the_local_run(data, inputs, xray_model, tmp_path, capsys):
    """``--scheduler local:2`` (two worker processes) and an external cluster of processes, against the local run."""
    from distributed import Client, LocalCluster

    local = _segment(capsys, inputs, tmp_path / "local", xray_model)
    spawned = _segment(capsys, inputs, tmp_path / "spawned", xray_model, "--scheduler", "local:2")
    assert spawned[:2] == local[:2]
    assert_same_outputs(tmp_path / "local", tmp_path / "spawned")
    more = [str(shutil.copy(data / "xray" / "nih_cxr14" / "00000001_000.png", tmp_path / f"copy{i}.png"))
            for i in range(4)]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        code, lines, _ = _segment(capsys, inputs[:-1] + more, tmp_path / "cluster", xray_model,
                                  "--scheduler", cluster.scheduler_address)
        loads = client.run(partial(getattr, batch, "LOADS"))
    assert code == 0 and len(lines) == 8
    assert sorted(sum(c.values()) for c in loads.values()) == [1, 1]  # 8 inputs, one load per worker process
