"""One call per video, for notebooks: a tidy per-frame table, as py-feat users expect.

    import fer_ray
    frames = fer_ray.annotate_video("clip.mp4", models="models/")   # pandas.DataFrame, one row per frame
    frames.label_name.value_counts()

`annotate_video` runs the annotate job's own stages (PreprocessStage, LogitsStage, VideoPostprocess) in
this process, without Ray, so its rows are the rows the job writes for that video: the columns of
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
from fer_ray.annotate import AnnotateConfig
from fer_ray.infer import systems
from fer_ray.infer.logits import LogitsStage
from fer_ray.infer.postprocess import VideoPostprocess
from fer_ray.infer.readers import read_predictions, sorted_frames

__all__ = ["annotate_video", "annotate_videos"]

# What the logits stage reads of the face rows (the face image itself, not boxes or landmarks).
_FACE_COLUMNS = [schema.VIDEO_ID, schema.FRAME_INDEX, schema.TIMESTAMP, schema.FACE, schema.NUM_FRAMES]


def annotate_video(video: str, models: str, system: str = "cfc_sp", *, output: str | None = None,
                   **options) -> pd.DataFrame:
    """Annotate one video (local path, file:// or s3:// URI) in this process; returns its per-frame rows.

    `models` is a train_all output (it holds models.json). `options` are AnnotateConfig fields
    (window, stride, max_frames, track_every, prior_correction, device, batch_size, ...).
    Raises ValueError when the video cannot be read (the reason as the job would record it).
    """
    with _workdir(output) as out:
        config = AnnotateConfig(input=str(video), models=str(models), output=out, system=system, **options)
        config.validate()
        entries, extras, version = systems.resolve(config)
        video_id = _preprocess_one(config)
        faces = shards.read_table(out, schema.FACES_TABLE, schema.FACES_SCHEMA, columns=_FACE_COLUMNS)
        if faces.num_rows == 0:
            raise ValueError(f"{video}: no frames were decoded")
        logits = _logits(faces, entries, config)
        post = VideoPostprocess(output=out, entries=entries, system=config.system, window=config.window,
                                version=version, weights=config.weights)
        post(logits)
        rows = sorted_frames(shards.read_table(out, schema.PREDICTIONS_TABLE, schema.PREDICTIONS_SCHEMA, columns=None))
    return rows[rows[schema.VIDEO_ID] == video_id].reset_index(drop=True)


def annotate_videos(inputs: str, models: str, output: str, system: str = "cfc_sp", **options) -> pd.DataFrame:
    """Annotate many videos (manifest, folder or s3:// prefix) with the Ray job; returns every video's rows
    under `output` (resumable: a rerun skips videos already annotated with the same models)."""
    from fer_ray.pipelines import run_annotate
    from fer_ray.runtime import init_ray

    config = AnnotateConfig(input=str(inputs), models=str(models), output=str(output), system=system, **options)
    config.validate()
    init_ray()
    run_annotate(config)
    return sorted_frames(read_predictions(config.output))


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

    pre = replace(_preprocess_config(config), num_workers=1, worker_cpus=float(config.threads))
    found = discover(config.input, image_batch_size=pre.image_batch_size, allowed_roots=config.allowed_roots)
    if found.rejected:
        raise ValueError(f"{config.input}: {found.rejected[0][schema.ERROR]}")
    videos = [item for item in found.items if item.get(schema.KIND, "video") == "video"]
    if len(videos) != 1:
        raise ValueError(f"{config.input}: annotate_video takes one video, found {len(videos)}; "
                         "use annotate_videos for many")
    row = PreprocessStage(pre).run_item(videos[0])
    if row["status"] == STATUS_FAILED:
        raise ValueError(f"{config.input}: {row['error']}")
    return row[schema.VIDEO_ID]


def _preprocess_config(config: AnnotateConfig):
    from fer_ray.preprocess import DetectorConfig, PreprocessConfig

    return PreprocessConfig(input=config.input, output=config.output, stride=config.stride,
                            max_frames=config.max_frames, face_size=config.face_size,
                            track_every=config.track_every, num_workers=config.num_workers,
                            decode_workers=config.decode_workers, worker_gpus=config.detect_gpus,
                            detector=DetectorConfig(device="cuda" if config.detect_gpus > 0 else "cpu"))


def _logits(faces, entries, config: AnnotateConfig) -> dict[str, np.ndarray]:
    """LogitsStage over the face rows in batches, concatenated into one video's batch."""
    stage = LogitsStage(entries, device=config.device, threads=config.threads,
                        prior_correction=config.prior_correction)
    outputs = []
    for start in range(0, faces.num_rows, config.batch_size):
        chunk = faces.slice(start, config.batch_size)
        batch = {name: chunk.column(name).to_numpy(zero_copy_only=False) for name in chunk.column_names}
        outputs.append(stage(batch))
    return {key: np.concatenate([out[key] for out in outputs]) for key in outputs[0]}
