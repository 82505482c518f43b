"""fer-ray: video facial-expression recognition (ABAW / Aff-Wild2 EXPR) as a distributed batch job on Ray.

    import fer_ray
    frames = fer_ray.annotate_video("clip.mp4", models="models/")   # one row per frame (pandas)
"""

__version__ = "0.1.0"
__all__ = ["annotate_video", "annotate_videos"]


def __getattr__(name: str):
    # imported on first use: `import fer_ray` stays cheap (no torch) for jobs that only need a submodule
    if name in __all__:
        from fer_ray import api

        return getattr(api, name)
    raise AttributeError(f"module 'fer_ray' has no attribute {name!r}")
