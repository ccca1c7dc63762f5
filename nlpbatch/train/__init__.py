"""Ray Train runtime: the shared training loop, the cross-worker gather, the TorchTrainer factory."""
