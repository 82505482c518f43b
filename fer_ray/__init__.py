"""fer-ray: video facial-expression recognition (ABAW / Aff-Wild2 EXPR) as a distributed batch job on Ray."""

__version__ = "0.1.0"
