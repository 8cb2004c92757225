"""scripts/gpu_check.sh: refuses to run without a GPU, and its CPU smoke mode runs every step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_without_a_gpu_it_fails_clearly():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: the script would run")
    done = _run(timeout=120)
    assert done.returncode == 1
    assert "no CUDA GPU visible" in done.stderr and "--dry-run" in done.stderr
    assert done.stdout == ""


def test_unknown_option_is_a_usage_error():
    done = _run("--fast", timeout=30)
    assert done.returncode == 2 and "unknown option --fast" in done.stderr


@pytest.mark.slow
def test_dry_run_runs_every_step_and_prints_the_table(tmp_path, data):
    done = _run("--dry-run", "--out", str(tmp_path / "out"), timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout
    assert "DRY RUN" in table and "FAILED" not in table
    for step in ("environment", "segment CT", "segment radiograph", "DRR", "train", "DDP"):
        assert f"| {step} |" in table, step
    assert "float32" in table and "autocast bfloat16" in table
    assert (tmp_path / "out" / "table.md").read_text() == table
