"""The one nnU-Net v2 runtime of training, adaptation, export and inference.

Modules: :mod:`.layout` (folder and file names), :mod:`.network` (plans -> network,
with the allow-list of classes), :mod:`.checkpoint` (the safe reader and atomic writer,
weights cleanup, loading into a network), :mod:`.normalize` (intensity normalisation by
nnU-Net scheme), :mod:`.predict` (whole-image and sliding-window logits) and
:mod:`.exact` (nnU-Net's own inference steps, as TS2D runs its published models).  It knows
nothing of data sets (:mod:`ts2d_xray.dataset`), bundles (:mod:`ts2d_xray.segment`) or
training (:mod:`ts2d_xray.train`), which build on it.
"""
