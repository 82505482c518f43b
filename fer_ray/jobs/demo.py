"""The demo job: the whole of fer-ray on one machine, preprocess -> train (in parallel) -> annotate ->
evaluate -> render, each step the library's own job (fer_ray.jobs.*, fer_ray.evaluate.run, fer_ray.render)
run in this process on one Ray instance; jobs/demo.py is its command line.

Uses the shared real data: training faces from the image sets (taiwanese_dev minus the held-out performers,
ckplus48, a fer2013 sample), the smoke model set (configs/smoke.yaml; configs/demo.yaml trains the same
models longer), and the labelled dev videos of the held-out performers for annotation and evaluation.
Every step saves its resolved config beside its output as the job's command line would; a rerun resumes
and skips finished work.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fer_ray import config, storage

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]  # the checkout: configs/ lives there


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


@dataclass(frozen=True)
class DemoPaths:
    faces: str
    models: str
    annotated: str
    report: str
    overlay: str

    @classmethod
    def of(cls, cfg: DemoConfig) -> DemoPaths:
        out = cfg.output
        # the preprocess output (its faces/ table inside), named as configs/smoke.yaml's `faces:` says
        return cls(storage.join(out, "preprocess"), storage.join(out, "models"), storage.join(out, "annotate"),
                   storage.join(out, "evaluate"), storage.join(out, f"overlay_{storage.safe_key(cfg.videos[0])}.mp4"))


class StepFailed(RuntimeError):
    """A demo step finished with failures; the demo stops there."""


@contextmanager
def _step(seconds: dict[str, float], name: str):
    log.info("demo: %s", name)
    start = time.perf_counter()
    yield
    seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - start, 1)


def _preprocess(cfg: DemoConfig, train_csv: str, faces: str) -> None:
    """The three labelled image sets into one faces output (the preprocess job, once per set)."""
    from fer_ray.jobs import preprocess

    data = str(Path(cfg.data).resolve())
    sources = [(train_csv, cfg.taiwanese_limit, [data]),  # the photos stay in the shared data folder
               (f"{data}/images/ckplus48/labels.csv", cfg.ckplus_limit, []),
               (f"{data}/images/fer2013/labels.csv", cfg.fer2013_limit, [])]
    for source, limit, roots in sources:
        job = preprocess.PreprocessConfig(input=source, output=faces, limit=limit, allowed_roots=roots)
        job.validate()
        config.save(job, storage.join(faces, "preprocess.yaml"))
        summary = preprocess.run(job)
        if summary["failed"]:
            log.warning("preprocess %s: %d item(s) failed: %s", source, summary["failed"], summary["failures"][:3])


def _train(cfg: DemoConfig, faces: str, models: str) -> dict:
    from fer_ray.jobs import train

    job = train.load_config(cfg.train_config, {"faces": [faces], "output": models})
    train.check_cluster(job)
    result = train.run(job)
    failed = {n: m.get("error", "") for n, m in result["models"].items() if m["status"] == "failed"}
    if failed:
        raise StepFailed(f"train_all: model(s) failed: {sorted(failed)}")
    return result


def _annotate(cfg: DemoConfig, manifest: str, paths: DemoPaths) -> dict:
    from fer_ray.jobs import annotate

    options = {"input": manifest, "allowed_roots": [str(Path(cfg.data).resolve())], "models": paths.models,
               "output": paths.annotated, "system": cfg.system, "window": cfg.window, "keep_logits": True,
               "track_every": cfg.track_every, "max_frames": cfg.max_frames}
    job = annotate.load_config({k: v for k, v in options.items() if v is not None})
    config.save(job, storage.join(paths.annotated, "annotate.yaml"))
    return annotate.run(job)


def _evaluate(cfg: DemoConfig, paths: DemoPaths) -> dict:
    from fer_ray.evaluate.run import EvaluateConfig, evaluate_run

    job = config.load(EvaluateConfig, None, overrides={
        "predictions": paths.annotated, "labels": f"{Path(cfg.data).resolve()}/videos/labeled",
        "output": paths.report, "logits": paths.annotated})
    config.save(job, storage.join(paths.report, "evaluate.yaml"))
    return evaluate_run(job)


def _render(cfg: DemoConfig, paths: DemoPaths) -> dict:
    from fer_ray import render

    video = f"{Path(cfg.data).resolve()}/videos/labeled/{cfg.videos[0]}.mp4"
    job = render.RenderConfig(video=video, predictions=paths.annotated, output=paths.overlay,
                              faces=paths.annotated, max_frames=cfg.render_frames)
    job.validate()
    return render.run(job)


def run(cfg: DemoConfig) -> dict:
    """Every step in order (Ray must be initialised); returns where the outputs are, each step's seconds, the
    trained models and their version, and the report's headline (macro-F1 with its interval beside the
    majority-class and chance figures of the same frames):
    {"paths", "seconds", "models", "version", "annotated", "headline"}."""
    cfg.validate()
    paths, seconds = DemoPaths.of(cfg), {}
    train_csv, manifest = write_inputs(cfg)
    with _step(seconds, "preprocess"):
        _preprocess(cfg, train_csv, paths.faces)
    with _step(seconds, "train_all"):
        trained = _train(cfg, paths.faces, paths.models)
    with _step(seconds, "annotate"):
        annotated = _annotate(cfg, manifest, paths)
    with _step(seconds, "evaluate"):
        evaluated = _evaluate(cfg, paths)
    with _step(seconds, "render"):
        _render(cfg, paths)
    return {"paths": paths, "seconds": seconds, "models": trained["models"], "version": trained["version"],
            "annotated": {k: annotated[k] for k in ("videos_annotated", "frames_annotated", "videos_failed")},
            "headline": evaluated["headline"]}
