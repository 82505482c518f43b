"""Train every model of a config as Ray Tune trials (several at once), write checkpoints and models.json.

    python jobs/train_all.py --config configs/smoke.yaml [--faces <preprocess output uri>] [--output <uri>]
    ray job submit --working-dir . -- python jobs/train_all.py --config configs/cfc_sp.yaml
    python jobs/train_all.py --config configs/cfc_sp.yaml --plan cluster/aws.yaml   # fit check only

Joins the cluster named by --address or RAY_ADDRESS (`ray job submit` sets it; `--address auto` finds a
local `ray start`), otherwise starts a local Ray (dashboard on 127.0.0.1). A rerun skips finished models
and resumes interrupted ones from their last checkpoint. Exit status 1 when a model failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from fer_ray import runtime  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="TrainConfig YAML (local path or s3://)")
    parser.add_argument("--faces", action="append", help="preprocess output URI(s) with faces/ (repeatable)")
    parser.add_argument("--output", help="where models/<name>/ and models.json go")
    parser.add_argument("--models", help="comma-separated model names to train (default: all in the config)")
    parser.add_argument("--max-concurrent-trials", type=int, dest="max_concurrent_trials")
    parser.add_argument("--address", help="Ray cluster to join ('auto', host:port; default: $RAY_ADDRESS, "
                        "else a local Ray)")
    parser.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    parser.add_argument("--plan", help="check only: every model's training worker fits a node type of this "
                        "cluster-launcher YAML or KubeRay manifest (e.g. cluster/aws.yaml); no Ray, no training")
    runtime.add_verbose_flag(parser)
    return parser.parse_args(argv)


def format_table(result: dict) -> str:
    header = ("model", "arch", "task", "size", "status", "epochs", "val_F1", "val_acc", "ABAW2", "minutes")
    rows = [header]
    for name, entry in result["models"].items():
        metrics = entry.get("metrics") or {}
        minutes = ((entry.get("finished_at") or 0) - (entry.get("started_at") or 0)) / 60
        rows.append((name, str(entry.get("arch", "-")), str(entry.get("task", "-")),
                     str(entry.get("input_size", "-")), entry["status"], str(entry.get("epochs", "-")),
                     *(f"{metrics[k]:.4f}" if k in metrics else "-" for k in
                       ("val_macro_f1", "val_accuracy", "val_abaw2")),
                     f"{minutes:.1f}" if entry.get("finished_at") else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runtime.setup_logging(verbose=args.verbose)
    from fer_ray.jobs import train

    overrides = {"faces": args.faces, "output": args.output, "max_concurrent_trials": args.max_concurrent_trials}
    try:
        config = train.load_config(args.config, overrides)
    except ValueError as exc:  # ConfigError included: one clear line instead of a traceback
        raise SystemExit(f"train_all: invalid configuration: {exc}") from None
    if args.models:
        train.select_models(config, [n.strip() for n in args.models.split(",") if n.strip()])
    if args.plan:
        try:
            train.check_plan(config, args.plan)
        except ValueError as exc:
            raise SystemExit(f"train_all: invalid configuration: {exc}") from None
        print(f"every model's training worker fits a node type of {args.plan}")
        return 0
    runtime.init_ray(args.num_cpus, args.address)  # --address / RAY_ADDRESS, else a local Ray
    try:  # a worker that fits no node would wait for resources forever: say so now, in one line
        train.check_cluster(config)
    except ValueError as exc:
        raise SystemExit(f"train_all: invalid configuration: {exc}") from None
    result = train.run(config)
    print(format_table(result))
    print(f"\nversion {result['version']}  index {result['index']}")
    failed = {n: m.get("error", "") for n, m in result["models"].items() if m["status"] == "failed"}
    for name, error in failed.items():
        print(f"FAILED {name}: {error.splitlines()[-1] if error else 'see Ray logs'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
