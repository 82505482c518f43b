"""The demo job: the whole of fer-ray on one machine, preprocess -> train (stages, models in parallel) ->
calibrate -> annotate -> evaluate -> render, each step the library's own job (fer_ray.jobs.*,
fer_ray.evaluate.run, fer_ray.render) run in this process on one Ray instance; jobs/demo.py is its command line.

Uses the shared real data: training faces from the image sets (taiwanese_dev minus the held-out performers,
ckplus48, a sample of fer2013's train split), all aligned to FER2013's framing at 48 px; configs/demo.yaml
(RECIPES.md's small CNN pretrained on every face, then CFC-SP's coarse and negative nets fine-tuned from it;
configs/smoke.yaml checks the plumbing only); the labelled videos of two held-out performers to calibrate the
SP window and prior correction, and of two others to annotate and evaluate. Every step saves its resolved
config beside its output as the job's command line would; a rerun resumes and skips finished work.
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
    videos: list[str] = field(default_factory=lambda: ["tw_TW01", "tw_TW07"])  # held-out performers, scored
    # held-out performers whose labelled videos choose the SP window and prior correction (jobs/calibrate.py),
    # never the scored ones; [] skips calibration (annotate then uses `window`, or 256)
    validation_videos: list[str] = field(default_factory=lambda: ["tw_TW11", "tw_TW14"])
    fer2013_limit: int = 6000
    taiwanese_limit: int | None = None  # at most N taiwanese_dev training photos (None: all of them)
    ckplus_limit: int = 1000
    train_config: str = str(ROOT / "configs" / "demo.yaml")  # configs/smoke.yaml: the plumbing only, ~6 min
    track_every: int = 5
    # every source aligned to FER2013's framing at 48 px (fer_ray.faces.align "fer"), as the recipe's small CNN
    # was measured with (../shared/RECIPES.md); annotate aligns the videos the same way (models.json "faces")
    geometry: str = "fer"
    face_size: int = 48
    system: str = "cfc_sp"
    window: int | None = None  # None: what calibration chose (else 256)
    calibration_frames: int | None = 1500  # frames per validation video the calibration annotates
    # calibration also tries annotate's flip test (each face scored mirrored too; only model time) and keeps
    # it when it scores better on the validation videos
    flip_tests: list[bool] = field(default_factory=lambda: [False, True])
    # and annotate's per-video normalisation at half strength (BatchNorm statistics half each video's own)
    adapt_bn: list[float] = field(default_factory=lambda: [0.0, 0.5])
    render_frames: int = 300
    max_frames: int | None = None  # annotate only the first N frames of each video (tests; None: all)
    stride: int = 1  # decode every N-th frame of the scored videos (the others are filled from them)

    def validate(self) -> None:
        if not Path(self.data, "README.md").exists():
            raise config.ConfigError(f"no shared data at {self.data}: pass --data or DATA=<dir>")
        videos = self.videos + self.validation_videos
        missing = [v for v in videos if not Path(self.data, "videos", "labeled", v + ".mp4").exists()]
        if missing:
            raise config.ConfigError(f"no labelled dev video(s) {missing} under {self.data}/videos/labeled")
        if set(self.videos) & set(self.validation_videos):
            raise config.ConfigError(f"videos {sorted(set(self.videos) & set(self.validation_videos))} are both "
                                     "scored and validation videos: calibrate on other performers")


def subject_of(video_id: str) -> str:
    return video_id.split("_")[-1]  # tw_TW01 -> TW01


def write_inputs(cfg: DemoConfig) -> tuple[str, str, str]:
    """A labels.csv of the training performers (held-out ones removed) and manifests of the test and the
    validation videos."""
    data = Path(cfg.data).resolve()
    held_out = {subject_of(v) for v in cfg.videos + cfg.validation_videos}
    with open(data / "images" / "taiwanese_dev" / "labels.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["subject"] not in held_out]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["path", "label", "subject"], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row | {"path": str(data / "images" / "taiwanese_dev" / row["path"])})
    train_csv = storage.join(cfg.output, "inputs", "taiwanese_dev_train", "labels.csv")
    storage.write_text_if_changed(train_csv, out.getvalue())  # a rerun's faces stay done
    manifests = []
    for name, videos in (("videos.csv", cfg.videos), ("validation_videos.csv", cfg.validation_videos)):
        lines = ["video_id,uri,label_uri"] + [
            f"{v},{data / 'videos' / 'labeled' / (v + '.mp4')},{data / 'videos' / 'labeled' / (v + '.txt')}"
            for v in videos]
        manifests.append(storage.join(cfg.output, "inputs", name))
        storage.write_text_if_changed(manifests[-1], "\n".join(lines) + "\n")
    return train_csv, manifests[0], manifests[1]


@dataclass(frozen=True)
class DemoPaths:
    faces: str
    models: str
    annotated: str
    report: str
    overlay: str
    calibration: str

    @classmethod
    def of(cls, cfg: DemoConfig) -> DemoPaths:
        out = cfg.output
        # the preprocess output (its faces/ table inside), named as configs/demo.yaml's `faces:` says
        return cls(storage.join(out, "preprocess"), storage.join(out, "models"), storage.join(out, "annotate"),
                   storage.join(out, "evaluate"), storage.join(out, f"overlay_{storage.safe_key(cfg.videos[0])}.mp4"),
                   storage.join(out, "calibrate"))


class StepFailed(RuntimeError):
    """A demo step finished with failures; the demo stops there."""


@contextmanager
def _step(seconds: dict[str, float], name: str):
    log.info("demo: %s", name)
    start = time.perf_counter()
    yield
    seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - start, 1)


def _preprocess(cfg: DemoConfig, train_csv: str, faces: str) -> None:
    """The three labelled image sets into one faces output: the preprocess job over all three in one pass
    (one set of stage actors; its summary.json covers every set). Each set's config is saved as
    preprocess-<set>.yaml, as its own command line would."""
    from fer_ray.jobs import preprocess

    data = str(Path(cfg.data).resolve())
    sources = [("taiwanese_dev_train", train_csv, cfg.taiwanese_limit, [data], None),  # photos stay in the data folder
               ("ckplus48", f"{data}/images/ckplus48/labels.csv", cfg.ckplus_limit, [], None),
               ("fer2013", f"{data}/images/fer2013/labels.csv", cfg.fer2013_limit, [], "train")]  # not its test split
    jobs = []
    for name, source, limit, roots, split in sources:
        job = preprocess.PreprocessConfig(input=source, output=faces, limit=limit, allowed_roots=roots, split=split,
                                          geometry=cfg.geometry, face_size=cfg.face_size)
        job.validate()
        config.save(job, storage.join(faces, f"preprocess-{name}.yaml"))
        jobs.append(job)
    summary = preprocess.run_many(jobs)
    if summary["failed"]:
        log.warning("preprocess: %d item(s) failed: %s", summary["failed"], summary["failures"][:3])


def _train(cfg: DemoConfig, faces: str, models: str) -> dict:
    from fer_ray.jobs import train

    job = train.load_config(cfg.train_config, {"faces": [faces], "output": models})
    train.check_cluster(job)
    result = train.run(job)
    failed = {n: m.get("error", "") for n, m in result["models"].items() if m["status"] == "failed"}
    if failed:
        raise StepFailed(f"train_all: model(s) failed: {sorted(failed)}")
    return result


def _calibrate(cfg: DemoConfig, manifest: str, paths: DemoPaths) -> dict:
    from fer_ray.jobs import calibrate

    data = str(Path(cfg.data).resolve())
    options = {"allowed_roots": [data], "track_every": cfg.track_every, "max_frames": cfg.calibration_frames}
    job = calibrate.CalibrateConfig(input=manifest, labels=f"{data}/videos/labeled", models=paths.models,
                                    output=paths.calibration, system=cfg.system, flip_tests=cfg.flip_tests,
                                    adapt_bn=cfg.adapt_bn,
                                    annotate={k: v for k, v in options.items() if v is not None})
    job.validate()
    config.save(job, storage.join(paths.calibration, "calibrate.yaml"))
    return calibrate.run(job)


def _annotate(cfg: DemoConfig, manifest: str, paths: DemoPaths) -> dict:
    from fer_ray.jobs import annotate

    options = {"input": manifest, "allowed_roots": [str(Path(cfg.data).resolve())], "models": paths.models,
               "output": paths.annotated, "system": cfg.system, "window": cfg.window, "keep_logits": True,
               "track_every": cfg.track_every, "max_frames": cfg.max_frames, "stride": cfg.stride}
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
    train_csv, manifest, validation = write_inputs(cfg)
    with _step(seconds, "preprocess"):
        _preprocess(cfg, train_csv, paths.faces)
    with _step(seconds, "train_all"):
        trained = _train(cfg, paths.faces, paths.models)
    if cfg.validation_videos:
        with _step(seconds, "calibrate"):
            _calibrate(cfg, validation, paths)
    with _step(seconds, "annotate"):
        annotated = _annotate(cfg, manifest, paths)
    with _step(seconds, "evaluate"):
        evaluated = _evaluate(cfg, paths)
    with _step(seconds, "render"):
        _render(cfg, paths)
    return {"paths": paths, "seconds": seconds, "models": trained["models"], "version": trained["version"],
            "annotated": {k: annotated[k] for k in ("videos_annotated", "frames_annotated", "videos_failed")},
            "headline": evaluated["headline"]}
