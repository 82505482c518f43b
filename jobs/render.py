"""Render an overlay video: the predicted expression, its probability and the 8 class probabilities on every frame.

    python jobs/render.py --video <video uri> --predictions <annotate output | predictions .parquet> \
        --output <overlay .mp4 uri> [--video-id ID] [--faces <preprocess/annotate output with faces/>] \
        [--max-frames N] [--codec auto|libx264|mpeg4] [--config render.yaml]

--faces adds the face box from the faces table. Frames whose label was filled (no face) carry a marker.
The video id defaults to the video file's stem (the id annotate gives a video at the top of its input
folder; pass --video-id for nested folders or manifests). Writes the .mp4 and the resolved config beside it
(<output>.yaml). Plain Python: no Ray needed for one video.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python jobs/render.py` from a checkout

from fer_ray import config, render  # noqa: E402
from fer_ray.render import RenderConfig  # noqa: E402
from fer_ray.runtime import setup_logging  # noqa: E402

log = logging.getLogger("fer_ray.jobs.render")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML with RenderConfig fields; flags override it")
    parser.add_argument("--video", help="the source video (local path, file:// or s3://)")
    parser.add_argument("--predictions", help="annotate output (holds predictions/) or one predictions .parquet")
    parser.add_argument("--output", help="the overlay .mp4 to write (local path or s3://)")
    parser.add_argument("--video-id", dest="video_id", help="video id in the predictions (default: file stem)")
    parser.add_argument("--faces", help="preprocess/annotate output with faces/: draw the face box")
    parser.add_argument("--max-frames", dest="max_frames", type=int, help="render only the first N frames")
    parser.add_argument("--chunk-size", dest="chunk_size", type=int, help="frames decoded at a time")
    parser.add_argument("--codec", choices=["auto", "libx264", "mpeg4"], help="encoder (auto: libx264 if present)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = vars(parse_args(argv))
    source = args.pop("config")
    try:
        cfg = config.load(RenderConfig, source, overrides=args)
    except (config.ConfigError, ValueError) as exc:
        raise SystemExit(f"render: {exc}") from None
    info = render.run(cfg)
    print(f"{info['video_id']}: {info['frames']} frames at {info['fps']:.3f} fps ({info['codec']}, "
          f"{info['width']}x{info['height']}, {info['bytes']} bytes) -> {cfg.output}")
    if info["uncovered"]:
        print(f"warning: {info['uncovered']} frames had no prediction row and were drawn without overlay")
    return 0


if __name__ == "__main__":
    sys.exit(main())
