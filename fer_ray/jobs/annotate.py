"""The annotate job: per-frame expression labels for every frame of every video, written to storage.

`run(config)` preprocesses the input videos itself (the face stages, `config.preprocess`) unless the input
is a preprocess output, then runs read faces -> LogitsStage actors -> group by video (logits rows only,
never images; with --adapt-bn the faces are grouped by video / by person's photos before the logits actors)
-> VideoPostprocess through fer_ray.raydata, and writes `<output>/summary.json`. The rest of
this module is Ray-free bookkeeping: what to run, what is already done, what was given up.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field, replace

from tqdm import tqdm

from fer_ray import config as cfg
from fer_ray import schema, shards, storage
from fer_ray.infer import adapt, systems
from fer_ray.infer.logits import LogitsStage
from fer_ray.infer.postprocess import LOGITS, PREDICTIONS, SafeVideoPostprocess
from fer_ray.plan import Resources, Step
from fer_ray.preprocess import FacesConfig

log = logging.getLogger(__name__)
FACES = schema.FACES_TABLE
# What the logits stage reads of the face rows (the face image itself, not boxes or landmarks).
FACE_COLUMNS = [schema.VIDEO_ID, schema.FRAME_INDEX, schema.TIMESTAMP, schema.FACE, schema.NUM_FRAMES]


def face_columns(markers: list[dict], subjects: bool = False) -> list[str]:
    """FACE_COLUMNS, plus the track id when a video was preprocessed with every face (its done marker lists
    its tracks). Faces written in one-face mode, including those from before track ids existed, are read
    without it: their rows are track 0 (fer_ray.infer.postprocess.track_ids). `subjects`: the subject column
    too (per-video normalisation groups photos by person)."""
    columns = [*FACE_COLUMNS, *([schema.SUBJECT] if subjects else [])]
    if any(shards.has_tracks(m) for m in markers):  # the boxes too: subjects are named by position
        return [*columns, schema.TRACK_ID, schema.BBOX]
    return columns


# Where annotate's face stages differ from the preprocess job's defaults: one detector actor unless asked
# (as many as logits actors when --num-workers is given), so annotate's actors share small nodes.
FACES_DEFAULTS = {"num_workers": 1}


def _faces_defaults() -> FacesConfig:
    return FacesConfig(**FACES_DEFAULTS)


@dataclass
class AnnotateConfig:
    """`jobs/annotate.py` options. `input` is videos (manifest, dir, s3 prefix) or a preprocess output.

    `preprocess` holds the face stages' settings for video inputs (frame selection, crops, detector actors);
    the flags --stride, --max-frames, --track-every, --all-faces, --decode-workers and --detect-gpus set them."""

    input: str
    models: str
    output: str
    system: str = "cfc_sp"
    window: int | None = None  # None: models.json's calibrated window for this system, else DEFAULT_WINDOW
    model_names: list[str] | None = None  # exact models.json run names; default: the system's models
    weights: dict[str, float] = field(default_factory=dict)  # run name -> ensemble weight (Mao)
    keep_logits: bool = False  # also write per-model logits (the ablation tables read them)
    prior_correction: bool | None = None  # divide out each frame model's training class prior (models.json);
    # None: what models.json's calibration chose for this system, else off
    # divide each model's mean prediction over a video (or face track), to this power, out of its frames: a
    # person's resting face read as one expression (cascade.correct_video_prior); 0 off, below 1.
    # None: what models.json's calibration chose for this system, else off
    video_prior: float | None = None
    flip_test: bool | None = None  # also score each face mirrored and average (frame models; 2 forward passes);
    # None: what models.json's calibration chose for this system, else off
    # score each video (each face track; a person's photos) with BatchNorm statistics this much its own faces'
    # and the rest the training faces' (fer_ray.infer.adapt; 0 off, 1 all its own; 0.5 keeps a one-expression
    # clip readable).
    # None: what models.json's calibration chose for this system, else off
    adapt_bn: float | None = None
    # also score five crops of each face (its corners and centre, 11/12 of its side) and average (frame models;
    # 6 forward passes, 12 with the flip test): training crops faces at random, so models know them cropped
    crop_test: bool = False
    since: str | None = None  # only videos modified after this ISO time, or "last" (previous run's start)
    max_attempts: int = 3  # a video that failed this many runs in a row on the same input is given up
    # Name the main face tracks of every video with these subjects, left to right (Aff-Wild2: left,right),
    # as a folder's <video>_left.txt / <video>_right.txt label pair does for its video. Needs all_faces.
    subjects: list[str] = field(default_factory=list)
    device: str = "auto"
    batch_size: int = 128
    num_workers: int = 1  # logits actors
    worker_cpus: float = 0.5  # per logits actor; fractional so decode/shuffle stages keep room on small nodes
    threads: int = 1  # torch threads per logits actor
    shuffle_partitions: int = 16  # group-by-video partitions (logits rows; with adapt_bn the faces too)
    worker_gpus: float = 0.0  # per logits actor: > 0 on GPU clusters (the actor then runs on CUDA, bf16)
    preprocess: FacesConfig = field(default_factory=_faces_defaults)  # for video inputs
    strict: bool = False
    allowed_roots: list[str] = field(default_factory=list)  # besides the input's own folder (--allow-root)

    # Keys that were top-level before the face stages' settings were nested under `preprocess`.
    moved_keys = {"stride": "preprocess.stride", "max_frames": "preprocess.max_frames",
                  "face_size": "preprocess.face_size", "track_every": "preprocess.track_every",
                  "decode_workers": "preprocess.decode_workers",
                  "detect_gpus": "preprocess.worker_gpus (with preprocess.detector.device: cuda)"}

    def validate(self) -> None:
        if self.system not in systems.SYSTEMS:
            raise cfg.ConfigError(f"system {self.system!r} unknown; valid: {', '.join(systems.SYSTEMS)}")
        if self.window is not None and self.window < 0:
            raise cfg.ConfigError(f"window must be >= 0 (0 disables Smooth Predicting), got {self.window}")
        if self.video_prior is not None and not 0.0 <= self.video_prior < 1.0:
            raise cfg.ConfigError(f"video_prior must lie in [0, 1) (0 off), got {self.video_prior}")
        if self.adapt_bn is not None and not 0.0 <= self.adapt_bn <= 1.0:
            raise cfg.ConfigError(f"adapt_bn must lie in [0, 1] (0 off), got {self.adapt_bn}")
        if self.batch_size < 1 or self.num_workers < 1:
            raise cfg.ConfigError("batch_size and num_workers must be >= 1")
        if self.worker_gpus < 0:
            raise cfg.ConfigError("worker_gpus must be >= 0")
        if self.max_attempts < 1:
            raise cfg.ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.subjects:
            if not self.preprocess.all_faces:
                raise cfg.ConfigError("subjects name face tracks: add --all-faces (preprocess.all_faces: true)")
            if len(set(self.subjects)) != len(self.subjects) or not all(
                    s.replace("-", "").isalnum() and s.isascii() for s in self.subjects):
                raise cfg.ConfigError("subjects must be distinct names of letters, digits and '-', e.g. left,right")
        if self.since not in (None, "last"):
            parse_since(self.since)
        self.preprocess.validate()


def nest_options(options: dict) -> dict:
    """Flat options as the flags, notebooks and earlier configs give them (`stride`, `track_every`,
    `detect_gpus`, ...) nested under `preprocess`; None values (flags not given) dropped. `num_workers`
    also sizes the detector actors unless `preprocess.num_workers` says otherwise, as it always did."""
    flat = ("stride", "max_frames", "face_size", "geometry", "track_every", "decode_workers", "all_faces")
    out = {k: v for k, v in options.items() if v is not None and k not in AnnotateConfig.moved_keys
           and k not in flat}
    faces = {k: options[k] for k in flat if options.get(k) is not None}
    gpus = options.get("detect_gpus")
    if gpus is not None:
        faces["worker_gpus"] = gpus
        if gpus > 0:
            faces["detector"] = {"device": "cuda"}
    if options.get("num_workers") is not None:
        faces["num_workers"] = options["num_workers"]
    if faces:
        out["preprocess"] = cfg.merge(faces, out.get("preprocess") or {})
    return out


def load_config(source=None, overrides: dict | None = None) -> AnnotateConfig:
    """AnnotateConfig from a YAML file/URI or a dict, and flag overrides, both in flat or nested form."""
    data = nest_options(cfg.read(source))
    data["preprocess"] = cfg.merge(FACES_DEFAULTS, data.get("preprocess") or {})
    return cfg.load(AnnotateConfig, data, nest_options(overrides or {}), where=str(source or "config"))


# ---------------------------------------------------------------- the job


DEFAULT_WINDOW = 256  # the CFC-SP paper's best window, when models.json holds no calibration


def recorded_calibration(config: AnnotateConfig, index: dict | None = None) -> dict:
    """models.json's calibration of the config's system (jobs/calibrate.py); {} when there is none.
    `index`: models.json already read (else it is read here)."""
    index = systems.read_index(config.models) if index is None else index
    return index.get("calibration", {}).get(config.system) or {}


def calibrated(config: AnnotateConfig) -> AnnotateConfig:
    """`config` with the face geometry, window, prior corrections and flip test it left open (None) taken
    from models.json: the training faces' geometry, and the calibration of its system (jobs/calibrate.py),
    else the defaults (window 256, no correction, no flip test)."""
    index = systems.read_index(config.models)
    config = trained_geometry(config, index)
    if config.window is not None and config.prior_correction is not None and config.flip_test is not None \
            and config.video_prior is not None and config.adapt_bn is not None and config.weights:
        return config
    chosen = recorded_calibration(config, index)
    window = config.window if config.window is not None else int(chosen.get("window", DEFAULT_WINDOW))
    prior = config.prior_correction if config.prior_correction is not None \
        else bool(chosen.get("prior_correction", False))
    flip = config.flip_test if config.flip_test is not None else bool(chosen.get("flip_test", False))
    video_prior = config.video_prior if config.video_prior is not None else float(chosen.get("video_prior", 0.0))
    adapt_bn = config.adapt_bn if config.adapt_bn is not None else float(chosen.get("adapt_bn", 0.0))
    weights = config.weights or dict(chosen.get("weights") or {})
    if chosen:
        log.info("%s: calibrated on %d validation videos: window %d, prior correction %s, video prior %g, "
                 "flip test %s, per-video normalisation %g, weights %s (flags override)", config.system,
                 len(chosen.get("validation", {}).get("videos", [])), window, prior, video_prior, flip, adapt_bn,
                 weights or "equal")
    return replace(config, window=window, prior_correction=prior, flip_test=flip, weights=weights,
                   video_prior=video_prior, adapt_bn=adapt_bn)


def trained_geometry(config: AnnotateConfig, index: dict) -> AnnotateConfig:
    """`config` preprocessing videos as the models' training faces were (`index`, models.json: its "faces"
    geometry and crop side) unless it names a geometry itself."""
    if config.preprocess.geometry is not None:
        return config
    faces = index.get("faces") or {}
    if not faces.get("geometry"):
        return config
    log.info("faces aligned as the models were trained: geometry %s, %d px", faces["geometry"], faces["face_size"])
    return replace(config, preprocess=replace(config.preprocess, geometry=str(faces["geometry"]),
                                              face_size=int(faces["face_size"])))


def calibration_used(config: AnnotateConfig) -> dict | None:
    """What the run's window and prior correction came from, for its summary and the report: models.json's
    calibration of this system (its validation figures), and whether the run used it or its flags."""
    try:
        chosen = recorded_calibration(config)
    except FileNotFoundError:
        return None
    if not chosen:
        return None
    valid = chosen.get("validation", {})
    used = chosen.get("window") == config.window and chosen.get("prior_correction") == config.prior_correction \
        and float(chosen.get("video_prior", 0.0)) == float(config.video_prior or 0.0) \
        and bool(chosen.get("flip_test", False)) == bool(config.flip_test) \
        and float(chosen.get("adapt_bn", 0.0)) == float(config.adapt_bn or 0.0) \
        and dict(chosen.get("weights") or {}) == dict(config.weights or {})
    return {"window": chosen.get("window"), "prior_correction": chosen.get("prior_correction"),
            "video_prior": float(chosen.get("video_prior", 0.0)), "flip_test": bool(chosen.get("flip_test", False)),
            "adapt_bn": float(chosen.get("adapt_bn", 0.0)),
            "weights": chosen.get("weights") or {}, "used": used,
            "validation_videos": valid.get("videos", []), "validation_f1": valid.get("f1"),
            "validation_majority_f1": valid.get("majority_f1"), "validation_chance_f1": valid.get("chance_f1")}


def run(config: AnnotateConfig) -> dict:
    """Annotate every pending video of `config.input`; returns the summary (also written as summary.json)."""
    started_at = dt.datetime.now(dt.timezone.utc).isoformat()
    start = time.perf_counter()
    config = calibrated(config)
    entries, extras, version = systems.resolve(config)  # fails before any video is decoded
    for table in (PREDICTIONS, LOGITS):  # what an interrupted run left unreferenced (fer_ray.shards)
        shards.sweep(config.output, table)
    faces_uri, gave_up = faces_of(config)
    faces_markers = shards.done_markers(faces_uri, FACES)
    units = units_of(faces_uri, faces_markers)
    todo, finished = pending_videos(faces_uri, config.output, version, faces_markers, units)
    # what a prediction depends on, per video / photo: its faces marker's fingerprint
    sources = {u: str(faces_markers[k].get("fingerprint", "")) for k in todo for u in units[k]}
    # videos whose post-processing failed max_attempts runs in a row on these faces and this version
    stuck = set(given_up(config.output, {u: f"{version}|{s}" for u, s in sources.items()}, config.max_attempts))
    todo = [k for k in todo if not all(u in stuck for u in units[k])]
    gave_up = sorted(set(gave_up) | stuck)
    log.info("system %s, models %s, version %s: %d videos to annotate, %d already done, %d given up",
             config.system, [e.name for e in entries], version, len(todo), len(finished), len(gave_up))
    parts = shards.complete_parts(faces_uri, FACES, todo)
    subjects = {v: list(config.subjects or faces_markers[v].get("subjects") or []) for v in todo
                if faces_markers[v].get("kind", "video") == "video"}
    photos = sorted(u for k in todo if faces_markers[k].get("kind") == "image" for u in units[k])
    plan = steps(config, entries, extras, version, {u: sources[u] for k in todo for u in units[k]}, len(parts),
                 {v: names for v, names in subjects.items() if names}, photos)
    columns = face_columns([faces_markers[v] for v in todo], subjects=bool(config.adapt_bn))
    rows = _annotate(parts, columns, plan, sum(len(units[k]) for k in todo)) if parts else []
    return write_summary(config, rows, finished, version, time.perf_counter() - start, started_at, gave_up)


def faces_of(config: AnnotateConfig) -> tuple[str, list[str]]:
    """The preprocess output to annotate and the videos given up (failed max_attempts runs in a row): the
    input itself when it is one, else the input videos decoded, detected and aligned into
    `<output>/faces` (resumable)."""
    from fer_ray.jobs.preprocess import run_items

    if is_faces_output(config.input):
        return config.input, []
    items, gave_up = plan_items(config)
    run_items(items, config.preprocess, config.output)
    return config.output, gave_up


def steps(config: AnnotateConfig, entries, extras, version: str, sources: dict[str, str], parts: int,
          subjects: dict[str, list[str]] | None = None, photos: list[str] = ()) -> list[Step]:
    """Face rows -> logits rows -> one call per video (or photo)."""
    kwargs = postprocess_kwargs(config, entries, extras, version, sources) | {"subjects": subjects or {},
                                                                              "photos": list(photos)}
    return [logits_step(config, entries + extras, parts),
            SafeVideoPostprocess.step(kwargs, partitions=max(1, min(parts, config.shuffle_partitions)))]


def logits_step(config: AnnotateConfig, models, parts: int = 1) -> Step:
    """LogitsStage actors: every model loaded once per actor, `batch_size` faces per call; with per-video
    normalisation one whole normalisation group per call (a video, a person's photos: adapt.groups; a
    group-by shuffle of the encoded faces first)."""
    kwargs = {"models": models, "device": config.device, "threads": config.threads,
              "prior_correction": config.prior_correction, "flip_test": bool(config.flip_test),
              "adapt_bn": float(config.adapt_bn or 0.0), "crop_test": bool(config.crop_test)}
    whole = bool(config.adapt_bn)
    resources = Resources(num_cpus=config.worker_cpus, num_gpus=config.worker_gpus,
                          batch_size=None if whole else config.batch_size, concurrency=config.num_workers)
    return Step(LogitsStage, kwargs, resources, name="logits actors", group_by=schema.NORM_GROUP if whole else None,
                group_key=adapt.with_groups if whole else None, partitions=max(1, min(parts, config.shuffle_partitions)))


def options_suffix(flip_test: bool = False, crop_test: bool = False, adapt_bn: float = 0.0) -> str:
    """How runs of the same faces that differ in these scoring options name their folders and files
    (calibrate's validation runs, the benchmarks'): "_flip", "_crop", "_adapt<S>", in that order, each only
    when on; "" for none."""
    return ("_flip" if flip_test else "") + ("_crop" if crop_test else "") + (f"_adapt{adapt_bn:g}" if adapt_bn else "")


def postprocess_kwargs(config: AnnotateConfig, entries, extras, version: str, sources: dict[str, str] | None):
    return {"output": config.output, "entries": entries, "extras": extras, "system": config.system,
            "window": config.window, "version": version, "weights": config.weights,
            "keep_logits": config.keep_logits, "sources": sources, "video_prior": float(config.video_prior or 0.0)}


def _annotate(parts: list[str], columns: list[str], plan: list[Step], videos: int) -> list[dict]:
    from fer_ray import raydata

    rows: list[dict] = []
    with tqdm(total=videos, desc="annotate", unit="video") as bar:
        for row in raydata.run_parquet(parts, columns, plan, read_cpus=0.25):
            rows.append(row)
            bar.update(1)
            bar.set_postfix(frames=sum(int(r["frames"]) for r in rows))
    return rows


# ---------------------------------------------------------------- bookkeeping (no Ray)


def parse_since(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise cfg.ConfigError(f"since must be an ISO time (2026-11-01T00:00:00) or 'last', got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def is_faces_output(uri: str) -> bool:
    """True when `uri` is a preprocessing output (it has face shards with done markers)."""
    return storage.is_dir(storage.join(uri, FACES, shards.DONE_DIR))


def photo_ids(faces_uri: str, key: str, marker: dict) -> list[str]:
    """The photos of an image batch of the faces table (its marker lists them; older markers do not, and
    then its parts' video_id column does)."""
    if "members" in marker:
        return list(marker["members"])
    table = storage.read_parquet_many(shards.complete_parts(faces_uri, FACES, [key]), columns=[schema.VIDEO_ID])
    return sorted(set(table.column(schema.VIDEO_ID).to_pylist()))


def units_of(faces_uri: str, faces_markers: dict[str, dict]) -> dict[str, list[str]]:
    """faces-table key -> what annotate writes a prediction for: the video itself, or each photo of an image
    batch (a photo is a one-frame video). Pre-cropped training faces (kind face_crop) are not annotated."""
    out = {}
    for key, marker in faces_markers.items():
        kind = marker.get("kind", "video")
        if kind == "video":
            out[key] = [key]
        elif kind == "image":
            out[key] = photo_ids(faces_uri, key, marker)
    return out


def pending_videos(faces_uri: str, output: str, version: str, faces_markers: dict[str, dict] | None = None,
                   units: dict[str, list[str]] | None = None) -> tuple[list[str], list[str]]:
    """(faces-table keys to annotate, videos and photos already annotated with this model version from
    their current faces). A key is pending while any of its videos / photos is not annotated.

    A video whose faces were redone since it was annotated (its input changed) is annotated again: the
    predictions marker records the faces marker's fingerprint as its `source`."""
    if faces_markers is None:
        faces_markers = shards.done_markers(faces_uri, FACES)
    units = units_of(faces_uri, faces_markers) if units is None else units
    done = shards.done_markers(output, PREDICTIONS)

    def finished(unit: str, key: str) -> bool:
        return done.get(unit, {}).get("model_version") == version \
            and done[unit].get("source", "") == faces_markers[key].get("fingerprint", "")

    todo = sorted(k for k, ids in units.items() if faces_markers[k].get("frames", 1) > 0
                  and not all(finished(u, k) for u in ids))
    complete = sorted(u for k, ids in units.items() if k not in set(todo) for u in ids)
    return todo, complete


def given_up(output: str, fingerprints: dict[str, str], max_attempts: int) -> list[str]:
    """Videos whose failure record says they failed `max_attempts` runs in a row on the input they have
    now (video id -> fingerprint): retrying them again would only fail again."""
    out = []
    for record in shards.read_failures(output).to_pylist():
        video_id = record[schema.VIDEO_ID]
        if video_id in fingerprints and record[schema.ATTEMPTS] >= max_attempts \
                and record[schema.FINGERPRINT] == fingerprints[video_id]:
            out.append(video_id)
    return sorted(out)


def write_summary(config: AnnotateConfig, rows: list[dict], skipped: list[str], version: str,
                  seconds: float, started_at: str, gave_up: list[str] = ()) -> dict:
    """summary.json: per-video counts and label histogram, throughput, failures (with their attempt counts)
    and the videos given up after max_attempts failed runs."""
    markers = shards.done_markers(config.output, PREDICTIONS)
    videos = {v: {k: m.get(k) for k in ("frames", "faces", "histogram", "model_version", "tracks", "subjects")
                  if k in m}
              for v, m in sorted(markers.items())}
    processed = [r for r in rows if r["status"] == "done"]
    frames = sum(int(r["frames"]) for r in processed)
    failures = shards.read_failures(config.output).to_pylist()
    summary = {
        "system": config.system, "window": config.window, "model_version": version, "crop_test": bool(config.crop_test),
        "started_at": started_at, "seconds": round(seconds, 3),
        "videos_annotated": len(processed), "videos_skipped": len(skipped), "videos_failed": len(failures),
        "videos_given_up": len(gave_up), "given_up": sorted(gave_up),
        "frames_annotated": frames, "frames_per_second": round(frames / seconds, 2) if seconds > 0 else None,
        "videos": videos, "failures": failures, "calibration": calibration_used(config),
    }
    storage.write_json(storage.join(config.output, "summary.json"), summary)
    return summary


def last_started_at(output: str) -> str | None:
    """The previous run's start time (its summary.json), for --since last."""
    uri = storage.join(output, "summary.json")
    return storage.read_json(uri).get("started_at") if storage.exists(uri) else None


def work_items(config: AnnotateConfig) -> list[dict]:
    """Videos under config.input to (re)process now; see plan_items."""
    return plan_items(config)[0]


def plan_items(config: AnnotateConfig) -> tuple[list[dict], list[str]]:
    """(work items to run, videos given up) under config.input; inputs rejected up front become failures.

    With --since only videos modified after that time are new, but a video that failed before is retried on
    every run until it has failed `max_attempts` runs in a row on the same content (then it is given up; a
    changed file is a new input and is tried again)."""
    from fer_ray.inputs import discover, item_fingerprint
    from fer_ray.jobs.preprocess import PreprocessConfig

    found = discover(config.input, image_batch_size=PreprocessConfig.image_batch_size,
                     allowed_roots=config.allowed_roots)
    failed = {r[schema.VIDEO_ID]: r for r in shards.read_failures(config.output).to_pylist()}
    gave_up = []
    for reject in found.rejected:
        video_id = reject[schema.VIDEO_ID]
        if failed.get(video_id, {}).get(schema.ATTEMPTS, 0) >= config.max_attempts:
            gave_up.append(video_id)
            continue
        shards.write_failure(config.output, video_id, reject[schema.URI], reject["stage"], reject[schema.ERROR])
    retry = [item for item in found.items if item[schema.VIDEO_ID] in failed]
    gave_up += given_up(config.output, {item[schema.VIDEO_ID]: item_fingerprint(item) for item in retry},
                        config.max_attempts)
    retry = [item for item in retry if item[schema.VIDEO_ID] not in set(gave_up)]
    if gave_up:
        log.warning("%d videos given up after %d failed runs each (see failures/)", len(gave_up),
                    config.max_attempts)
    since = last_started_at(config.output) if config.since == "last" else config.since
    fresh = [item for item in found.items if item[schema.VIDEO_ID] not in failed]
    if since:
        moment = parse_since(since)
        fresh = [item for item in fresh if storage.modified(item[schema.URI]) > moment]
        log.info("--since %s: %d of %d inputs are new, %d failed before and are retried", since, len(fresh),
                 len(found.items), len(retry))
    chosen = {item[schema.VIDEO_ID] for item in fresh + retry}
    return [item for item in found.items if item[schema.VIDEO_ID] in chosen], sorted(gave_up)
