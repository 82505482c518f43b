"""Export a run's predictions: per-video CSV, one combined Parquet, or ABAW submission txt files.

    python jobs/export.py --predictions <run uri> --format csv|abaw|parquet --output <uri>

See fer_ray.infer.export for the file layout of each format.
"""

from __future__ import annotations

import argparse
import sys

from fer_ray import config
from fer_ray.infer.export import FORMATS, ExportConfig, export_predictions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML with ExportConfig fields; flags override it")
    parser.add_argument("--predictions", help="run URI whose predictions/ to export")
    parser.add_argument("--format", choices=FORMATS)
    parser.add_argument("--output", help="where the exported files go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = vars(parse_args(argv))
    source = args.pop("config")
    cfg = config.load_for_job("export", ExportConfig, source, overrides=args)
    written = export_predictions(cfg.predictions, cfg.format, cfg.output)
    print(f"wrote {len(written)} file(s) under {cfg.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
