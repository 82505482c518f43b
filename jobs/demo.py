"""The whole of fer-ray on one machine: preprocess -> train (in parallel) -> annotate -> evaluate -> render.

    python jobs/demo.py [--data ../shared/data] [--output demo_out | s3://bucket/demo] [--videos tw_TW01 tw_TW07]

Uses the shared real data: training faces from the image sets (taiwanese_dev minus the held-out
performers, ckplus48, a fer2013 sample), the smoke model set (configs/smoke.yaml; `--train-config
configs/demo.yaml` trains the same models longer), and the labelled dev videos of the held-out performers for annotation and evaluation.
Every step is the real job, run in this process on one local Ray instance; a rerun resumes and skips finished work.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import runpy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from fer_ray import config, storage  # noqa: E402
from fer_ray.runtime import init_ray, setup_logging  # noqa: E402

log = logging.getLogger("fer_ray.demo")


@dataclass
class DemoConfig:
    data: str = "../shared/data"
    output: str = "demo_out"
    videos: list[str] = field(default_factory=lambda: ["tw_TW01", "tw_TW07"])  # held-out performers
    fer2013_limit: int = 600
    taiwanese_limit: int | None = None  # at most N taiwanese_dev training photos (None: all of them)
    ckplus_limit: int = 600
    train_config: str = str(ROOT / "configs" / "smoke.yaml")  # measured: the whole demo in ~6 min on 2 cores
    track_every: int = 5
    system: str = "cfc_sp"
    window: int = 256
    render_frames: int = 300
    max_frames: int | None = None  # annotate only the first N frames of each video (tests; None: all)

    def validate(self) -> None:
        if not Path(self.data, "README.md").exists():
            raise config.ConfigError(f"no shared data at {self.data}: pass --data or DATA=<dir>")
        missing = [v for v in self.videos if not Path(self.data, "videos", "labeled", v + ".mp4").exists()]
        if missing:
            raise config.ConfigError(f"no labelled dev video(s) {missing} under {self.data}/videos/labeled")


def run_job(name: str, argv: list[str]) -> int:
    """Run jobs/<name>.py's main() in this process (one Ray instance for all steps)."""
    print(f"\n=== {name}: {' '.join(argv)}", flush=True)
    main = runpy.run_path(str(ROOT / "jobs" / f"{name}.py"), run_name=f"fer_ray_job_{name}")["main"]
    code = main(argv)
    if code:
        raise SystemExit(f"{name} failed with exit status {code}")
    return code


def subject_of(video_id: str) -> str:
    return video_id.split("_")[-1]  # tw_TW01 -> TW01


def write_inputs(cfg: DemoConfig) -> tuple[str, str]:
    """A labels.csv of the training performers (held-out ones removed) and a manifest of the test videos."""
    data = Path(cfg.data).resolve()
    held_out = {subject_of(v) for v in cfg.videos}
    with open(data / "images" / "taiwanese_dev" / "labels.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["subject"] not in held_out]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["path", "label", "subject"], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row | {"path": str(data / "images" / "taiwanese_dev" / row["path"])})
    train_csv = storage.join(cfg.output, "inputs", "taiwanese_dev_train", "labels.csv")
    storage.write_text(train_csv, out.getvalue())
    lines = ["video_id,uri,label_uri"] + [
        f"{v},{data / 'videos' / 'labeled' / (v + '.mp4')},{data / 'videos' / 'labeled' / (v + '.txt')}"
        for v in cfg.videos]
    manifest = storage.join(cfg.output, "inputs", "videos.csv")
    storage.write_text(manifest, "\n".join(lines) + "\n")
    return train_csv, manifest


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data")
    parser.add_argument("--output")
    parser.add_argument("--videos", nargs="+")
    parser.add_argument("--fer2013-limit", dest="fer2013_limit", type=int)
    parser.add_argument("--ckplus-limit", dest="ckplus_limit", type=int)
    parser.add_argument("--taiwanese-limit", dest="taiwanese_limit", type=int)
    parser.add_argument("--train-config", dest="train_config", help="train_all config (default configs/smoke.yaml)")
    parser.add_argument("--max-frames", dest="max_frames", type=int, help="annotate the first N frames per video")
    parser.add_argument("--render-frames", dest="render_frames", type=int, help="overlay video length (frames)")
    args = vars(parser.parse_args(argv))
    cfg = config.load(DemoConfig, None, overrides=args)
    start = time.perf_counter()
    out, data = cfg.output, str(Path(cfg.data).resolve())
    faces, models = storage.join(out, "faces"), storage.join(out, "models")
    annotated, report = storage.join(out, "annotate"), storage.join(out, "evaluate")
    init_ray()
    train_csv, manifest = write_inputs(cfg)
    run_job("preprocess", ["--input", train_csv, "--output", faces, "--allow-root", data]  # images stay in data
            + (["--limit", str(cfg.taiwanese_limit)] if cfg.taiwanese_limit else []))
    run_job("preprocess", ["--input", f"{data}/images/ckplus48/labels.csv", "--output", faces,
                           "--limit", str(cfg.ckplus_limit)])
    run_job("preprocess", ["--input", f"{data}/images/fer2013/labels.csv", "--output", faces,
                           "--limit", str(cfg.fer2013_limit)])
    run_job("train_all", ["--config", cfg.train_config, "--faces", faces, "--output", models])
    run_job("annotate", ["--input", manifest, "--allow-root", data, "--models", models, "--output", annotated,
                         "--system", cfg.system,
                         "--window", str(cfg.window), "--keep-logits", "--track-every", str(cfg.track_every)]
            + (["--max-frames", str(cfg.max_frames)] if cfg.max_frames else []))
    run_job("evaluate", ["--predictions", annotated, "--labels", f"{data}/videos/labeled", "--output", report,
                         "--logits", annotated])
    overlay = storage.join(out, f"overlay_{storage.safe_key(cfg.videos[0])}.mp4")
    if (ROOT / "jobs" / "render.py").exists():
        run_job("render", ["--video", f"{data}/videos/labeled/{cfg.videos[0]}.mp4", "--predictions", annotated,
                           "--faces", annotated, "--output", overlay, "--max-frames", str(cfg.render_frames)])
    print(f"\nfer-ray demo finished in {(time.perf_counter() - start) / 60:.1f} min")
    print(f"  report:      {storage.join(report, 'report.html')}")
    print(f"  predictions: {storage.join(annotated, 'predictions')}  submission: {storage.join(annotated, 'submission')}")
    print(f"  models:      {storage.join(models, 'models.json')}  overlay: {overlay}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
