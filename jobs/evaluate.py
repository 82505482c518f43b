"""Evaluate a run's predictions against Aff-Wild2 EXPR labels; write metrics, tables and an HTML report.

    python jobs/evaluate.py --predictions <run uri> --labels <dir | s3 prefix of EXPR txt | labels.csv> \
        --output <uri> [--logits <run uri>] [--config evaluate.yaml] [--window 256] [--fps 30]

<run uri>/predictions/ holds Parquet in schema.PREDICTIONS_SCHEMA; --logits <run uri>/logits/ holds the
per-model logits that the CFC-SP ablation tables are computed from (no model is re-run). Outputs:
<output>/metrics.json, tables/*.csv|md, plots/*.png, report.html, evaluate.yaml (the resolved config).
"""

from __future__ import annotations

import argparse
import json
import sys

from fer_ray import config, storage
from fer_ray.evaluate.run import EvaluateConfig, evaluate_run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML with EvaluateConfig fields; flags override it")
    parser.add_argument("--predictions", help="run URI whose predictions/ to score")
    parser.add_argument("--labels", help="EXPR txt directory/prefix, or a labels.csv")
    parser.add_argument("--output", help="where metrics, tables and report go")
    parser.add_argument("--logits", help="run URI whose logits/ feed the ablation tables")
    parser.add_argument("--fps", type=float, help="frame rate where predictions have no timestamps")
    parser.add_argument("--window", type=int, help="Smooth Predicting window for the ablations")
    parser.add_argument("--windows", type=int, nargs="+", help="window sweep (Table 4)")
    parser.add_argument("--max-timelines", dest="max_timelines", type=int, help="timeline plots to draw")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = vars(parse_args(argv))
    source = args.pop("config")
    cfg = config.load_for_job("evaluate", EvaluateConfig, source, overrides=args)
    config.save(cfg, storage.join(cfg.output, "evaluate.yaml"))
    summary = evaluate_run(cfg)
    overall = summary["overall"]
    print(json.dumps({k: overall[k] for k in ("f1", "accuracy", "abaw2_score", "annotated")}
                     | {"report": summary["report"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
