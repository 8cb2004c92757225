"""Training of multi-label 2D segmentation models, in nnU-Net v2's formats.

One sigmoid output per structure (structures overlap in projections), nnU-Net's
Dice + BCE loss with deep supervision, its 2D augmentation without mirroring, its
optimiser and schedule; plans, checkpoints and folders in nnU-Net's layout
(:mod:`ts2d_xray.nnunet.layout`)::

    MODEL_DIR/Ts2dMultiLabelTrainer__<plans>__2d/{plans.json, dataset.json, fold_N/checkpoint_final.pth}

The network, checkpoint reading and writing, normalisation and whole-image prediction
are the nnU-Net runtime's that inference uses (:mod:`ts2d_xray.nnunet`).

Modules: :mod:`.config` (presets ``tiny`` and ``default``), :mod:`.plans` (planning,
``plans.json``), :mod:`.data` (reading, resampling, normalisation), :mod:`.transforms`
(nnU-Net's and radiographs' augmentation), :mod:`.sampling` (batches), :mod:`.loss`,
:mod:`.validation`, :mod:`.splits`, :mod:`.checkpoint` (reading trained models),
:mod:`.training_log`, :mod:`.options`, :mod:`.trainer`, :mod:`.adapt` (a coronal model
fine-tuned on radiographs into an X-ray model), :mod:`.export` (trained folders into a
slim model bundle).

Example:
    >>> from ts2d_xray.train import TrainOptions, train
    >>> result = train("Dataset501_Coronal/organs", "models", "tiny", TrainOptions(device="cpu"))  # doctest: +SKIP
    >>> result.final_checkpoint  # doctest: +SKIP
    PosixPath('models/Ts2dMultiLabelTrainer__ts2dPlansTiny__2d/fold_0/checkpoint_final.pth')
    >>> from ts2d_xray.train import adapt
    >>> xray = adapt("models", "Dataset601_Xray/organs", "models_xray", TrainOptions(device="cpu"),
    ...              epochs=5, freeze_encoder_epochs=1)  # doctest: +SKIP
"""

from ts2d_xray.nnunet.checkpoint import load_weights
from ts2d_xray.nnunet.layout import TRAINER_NAME, trainer_folder
from ts2d_xray.nnunet.network import build_network
from ts2d_xray.nnunet.predict import whole_image_logits
from ts2d_xray.train.adapt import adapt, adaptation_trainer, load_coronal_model
from ts2d_xray.train.checkpoint import load_checkpoint, load_trained_network
from ts2d_xray.train.config import CONFIGS, TrainConfig, get_config
from ts2d_xray.train.data import preprocess_image
from ts2d_xray.train.export import export_bundle
from ts2d_xray.train.options import TrainOptions, TrainResult, resolve_device
from ts2d_xray.train.trainer import Trainer, train
from ts2d_xray.train.transforms import XRAY_TRAINING_AUGMENT, Augmentation, NnUNetAugmentation, XrayAugmentation

__all__ = [
    "CONFIGS",
    "TRAINER_NAME",
    "XRAY_TRAINING_AUGMENT",
    "Augmentation",
    "NnUNetAugmentation",
    "TrainConfig",
    "TrainOptions",
    "TrainResult",
    "Trainer",
    "XrayAugmentation",
    "adapt",
    "adaptation_trainer",
    "build_network",
    "export_bundle",
    "get_config",
    "load_checkpoint",
    "load_coronal_model",
    "load_trained_network",
    "load_weights",
    "preprocess_image",
    "resolve_device",
    "train",
    "trainer_folder",
    "whole_image_logits",
]
