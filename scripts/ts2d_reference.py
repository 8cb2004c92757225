"""TS2D 1.2.0 on a list of inputs, for ``scripts/ts2d_parity.py`` (run there in a subprocess).

Run as ``python -m ts2d_reference JOBS.json`` with TS2D's install folder first on
``PYTHONPATH`` (so that ``nnunetv2`` is TS2D's fork) and ``HOME`` holding the models in
``.ts2d/models``.  It imports nothing of ts2d-xray.

What differs from ``ts2d`` on the command line, none of it touching the numbers:

* TS2D's ``ParallelPredictor`` (a pool of spawned worker processes) is replaced by one
  that runs the same ``prediction_worker._run_predict`` in this process;
* nnU-Net's ``export_prediction_from_logits`` is wrapped to save the logits it
  thresholds: resampled to the input grid exactly as its export does
  (``resampling_fn_probabilities``), background first;
* for a job with ``"float32": true`` the sliding window accumulates in float32 instead
  of float16 (``torch.half`` seen as ``torch.float32`` by nnU-Net's predictor module
  only).

Outputs per job: ``<tag>-<group>.seg.nrrd`` (TS2D's segmentation of that group, its
K components) and ``<tag>-<group>.logits.npy``.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np

CURRENT: dict = {}


class InProcessPredictor:
    """TS2D's ``ParallelPredictor`` interface, predicting in this process with TS2D's own worker function."""

    def __init__(self) -> None:
        self._param: dict = {}
        self._tasks: dict = {}
        self.predictor = None

    labels = property(lambda self: self._param.get("labels"), lambda self, v: self._param.__setitem__("labels", v))
    colors = property(lambda self: self._param.get("colors"), lambda self, v: self._param.__setitem__("colors", v))

    def start(self, predictor, num_workers: int = 1, pool=True, daemon=True) -> None:
        self.predictor = predictor()  # TS2D's lazy loader: nnUNetPredictor.initialize_from_trained_model_folder

    def predict(self, filenames, ofile, id=None, save_probabilities=False, overwrite=True, wait=True):
        from ts2d.core.inference.prediction_worker import PredictTask, _run_predict

        task = PredictTask(filenames, ofile, id=id)
        _run_predict(self.predictor, task, self._param)
        task.success = task.done = True
        self._tasks[task.id] = task
        return task if wait else task.id

    def wait(self, ids=None, timeout=None, fail=True):
        if ids == "startup":
            return None
        return {i: self._tasks[i] for i in ids}

    def stop(self, timeout=10) -> None:
        pass


def _patch() -> None:
    import torch

    import nnunetv2.inference.export_prediction as export
    import nnunetv2.inference.predict_from_raw_data as predictor_module
    import ts2d.core.inference.predictor as parallel
    from ts2d.tool import TS2D

    parallel.ParallelPredictor = InProcessPredictor
    original_export = export.export_prediction_from_logits

    def capture(logits, properties, configuration_manager, plans_manager, dataset_json, ofile, *args, **kwargs):
        spacing = [properties["spacing"][i] for i in plans_manager.transpose_forward]
        current = [spacing[0], *configuration_manager.spacing]
        native = configuration_manager.resampling_fn_probabilities(
            logits, properties["shape_after_cropping_and_before_resampling"], current, spacing)
        CURRENT["logits"] = np.asarray(native.numpy() if torch.is_tensor(native) else native)
        return original_export(logits, properties, configuration_manager, plans_manager, dataset_json, ofile,
                               *args, **kwargs)

    export.export_prediction_from_logits = capture
    proxy = types.ModuleType("torch_float32_accumulation")
    proxy.__dict__.update({k: getattr(torch, k) for k in dir(torch) if not k.startswith("__")})
    proxy.half = torch.float32
    CURRENT["torch"], CURRENT["proxy"], CURRENT["module"] = torch, proxy, predictor_module
    original_predict = TS2D._predict_model

    def predict_model(self, id, input, collapse, cache):
        CURRENT["id"] = id
        result = original_predict(self, id, input, collapse, cache)
        CURRENT.setdefault("by_model", {})[id] = CURRENT.pop("logits")
        return result

    TS2D._predict_model = predict_model


def main(spec_path: str) -> None:
    import SimpleITK as sitk

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    _patch()
    switch = {k: CURRENT[k] for k in ("torch", "proxy", "module")}
    from ts2d.core.inference.database import decompose_model_key
    from ts2d.tool import TS2D

    by_key: dict[str, list[dict]] = {}
    for job in spec["jobs"]:
        by_key.setdefault(job["key"], []).append(job)
    for key, jobs in by_key.items():
        with TS2D(key=key, use_remote=False, fetch_remote=False) as model:
            for job in jobs:
                CURRENT.clear()
                switch["module"].torch = switch["proxy"] if job.get("float32") else switch["torch"]
                result = model.predict(job["input"], collapse=False)
                for model_id in result.models:
                    _, group = decompose_model_key(model_id)
                    sitk.WriteImage(result.get_segmentation(model_id), str(out / f"{job['tag']}-{group}.seg.nrrd"))
                    np.save(out / f"{job['tag']}-{group}.logits.npy", CURRENT["by_model"][model_id])


if __name__ == "__main__":
    main(sys.argv[1])
