"""The one nnU-Net v2 runtime of training and inference: plans -> network, checkpoints,
normalisation and prediction."""
