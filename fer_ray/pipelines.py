"""The one module that speaks Ray Data. Every other module is plain Python, importable without Ray.

Sections (each owned by one job): preprocessing, training datasets, annotation.
"""

from __future__ import annotations

# ---------------------------------------------------------------- preprocessing (jobs/preprocess.py)


# ---------------------------------------------------------------- training datasets (jobs/train_all.py)


# ---------------------------------------------------------------- annotation (jobs/annotate.py)
