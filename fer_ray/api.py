"""One call per video, for notebooks: a tidy per-frame table, as py-feat users expect.

    import fer_ray
    frames = fer_ray.annotate_video("clip.mp4", models="models/")   # pandas.DataFrame, one row per frame
    frames.label_name.value_counts()

`annotate_video` runs the annotate job's own stages (PreprocessStage, LogitsStage, VideoPostprocess), as
the job declares them (fer_ray.jobs.annotate), in this process, without Ray, so its rows are the rows the job writes for that video: the columns of
`fer_ray.schema.PREDICTIONS_SCHEMA`, frames in order, frames without a face filled and flagged. It works
in a scratch folder that is removed afterwards unless `output` names one to keep (which then also holds
faces/, predictions/ and submission/ exactly as the job writes them, and is resumable like the job).

`annotate_videos` is the same for many videos through the Ray job (`jobs/annotate.py`): it joins the
cluster named by RAY_ADDRESS or starts a local Ray instance, writes to `output` and returns every
annotated video's rows.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import replace

import numpy as np
import pandas as pd

from fer_ray import schema, shards
from fer_ray.infer import systems
from fer_ray.infer.postprocess import VideoPostprocess
from fer_ray.infer.readers import read_predictions, sorted_frames
from fer_ray.jobs import annotate
from fer_ray.jobs.annotate import AnnotateConfig

__all__ = ["annotate_video", "annotate_videos"]


def annotate_video(video: str, models: str, system: str = "cfc_sp", *, output: str | None = None,
                   **options) -> pd.DataFrame:
    """Annotate one video (local path, file:// or s3:// URI) in this process; returns its per-frame rows.

    `models` is a train_all output (it holds models.json). `options` are AnnotateConfig fields (window,
    prior_correction, device, batch_size, ...) and the face stages' (stride, max_frames, track_every, ...),
    flat as the job's flags take them or nested as `preprocess={...}`.
    Raises ValueError when the video cannot be read (the reason as the job would record it).
    """
    with _workdir(output) as out:
        config = annotate.calibrated(_config(video, models, out, system, options))
        entries, _, version = systems.resolve(config)
        video_id = _preprocess_one(config)
        marker = shards.read_marker(out, schema.FACES_TABLE, video_id) or {}
        faces = shards.read_table(out, schema.FACES_TABLE, schema.FACES_SCHEMA,
                                  columns=annotate.face_columns([marker]))
        if faces.num_rows == 0:
            raise ValueError(f"{video}: no frames were decoded")
        logits = _logits(faces, entries, config)
        post = VideoPostprocess(**annotate.postprocess_kwargs(replace(config, keep_logits=False), entries, [],
                                                              version, sources=None))
        post(logits)
        rows = sorted_frames(shards.read_table(out, schema.PREDICTIONS_TABLE, schema.PREDICTIONS_SCHEMA, columns=None))
    return rows[rows[schema.VIDEO_ID] == video_id].reset_index(drop=True)


def annotate_videos(inputs: str, models: str, output: str, system: str = "cfc_sp", **options) -> pd.DataFrame:
    """Annotate many videos (manifest, folder or s3:// prefix) with the Ray job; returns every video's rows
    under `output` (resumable: a rerun skips videos already annotated with the same models)."""
    from fer_ray.runtime import init_ray

    config = _config(inputs, models, output, system, options)
    init_ray()
    annotate.run(config)
    return sorted_frames(read_predictions(config.output))


def _config(inputs, models, output: str, system: str, options: dict) -> AnnotateConfig:
    return annotate.load_config({"input": str(inputs), "models": str(models), "output": str(output),
                                 "system": system, **options})


@contextlib.contextmanager
def _workdir(output: str | None):
    if output:
        yield str(output)
        return
    with tempfile.TemporaryDirectory(prefix="fer-ray-") as tmp:
        yield tmp


def _preprocess_one(config: AnnotateConfig) -> str:
    """Decode, detect and align the one input video into `<output>/faces`; returns its video id."""
    from fer_ray.inputs import discover
    from fer_ray.preprocess import STATUS_FAILED, PreprocessStage

    found = discover(config.input, allowed_roots=config.allowed_roots)
    if found.rejected:
        raise ValueError(f"{config.input}: {found.rejected[0][schema.ERROR]}")
    videos = [item for item in found.items if item.get(schema.KIND, "video") == "video"]
    if len(videos) != 1:
        raise ValueError(f"{config.input}: annotate_video takes one video, found {len(videos)}; "
                         "use annotate_videos for many")
    faces = replace(config.preprocess, num_workers=1, worker_cpus=float(config.threads))  # this process only
    row = PreprocessStage(faces, config.output).run_item(videos[0])
    if row["status"] == STATUS_FAILED:
        raise ValueError(f"{config.input}: {row['error']}")
    return row[schema.VIDEO_ID]


def _logits(faces, entries, config: AnnotateConfig) -> dict[str, np.ndarray]:
    """LogitsStage over the face rows in batches, concatenated into one video's batch (with per-video
    normalisation in one call: its statistics are the whole video's)."""
    step = annotate.logits_step(config, entries)
    stage = step.stage(**step.kwargs)
    size = max(1, faces.num_rows if config.adapt_bn else config.batch_size)
    outputs = []
    for start in range(0, faces.num_rows, size):
        chunk = faces.slice(start, size)
        batch = {name: chunk.column(name).to_numpy(zero_copy_only=False) for name in chunk.column_names}
        outputs.append(stage(batch))
    return {key: np.concatenate([out[key] for out in outputs]) for key in outputs[0]}
