"""Inference, Ray-free: the logits stage, per-video prediction (ensemble, Smooth Predicting, cascade routing,
gap filling) and post-processing, reading runs back (readers) and exporting predictions (export).
Nothing here imports evaluate, train or pipelines (tests/unit/test_layers.py)."""
