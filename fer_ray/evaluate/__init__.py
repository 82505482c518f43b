"""Evaluation: frame-level metrics, CFC-SP ablation tables from stored logits, and reports."""
