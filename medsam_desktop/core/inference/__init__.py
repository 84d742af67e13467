"""Segmentation from box prompts: one preprocessing path, the stateless predictor, the embedding cache, the
model's view of a volume (planes, intensity mapping), 3D propagation and the challenge algorithm. No Qt."""
