"""The preprocess job: videos and labelled image sets -> aligned face crops, one Parquet row per decoded frame.

`run(config)` discovers the work items, records the rejected inputs as failures, runs the face stages
(fer_ray.preprocess) through fer_ray.raydata and writes `<output>/summary.json`. Reruns resume: an item
whose done marker has the same fingerprint is skipped, anything else redone.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from fer_ray import schema, shards, storage
from fer_ray.inputs import MEMBERS
from fer_ray.preprocess import (
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_SKIPPED,
    ChunkCollector,
    DecodeStage,
    DetectStage,
    FacesConfig,
    PreprocessStage,
    skip_finished,
)

log = logging.getLogger(__name__)


@dataclass
class PreprocessConfig(FacesConfig):
    """Everything jobs/preprocess.py needs: the face stages' settings (FacesConfig) plus what to read and
    where to write; saved as `<output>/preprocess.yaml`."""

    input: str = ""  # manifest (.csv/.parquet), labels.csv, folder or s3:// prefix, or one video
    output: str = ""  # folder or s3:// prefix; faces/, failures/, summary.json go under it
    limit: int | None = None  # at most this many images per labelled image set (seeded sample)
    split: str | None = None  # only this split's rows of an image set (its labels.csv's split column)
    seed: int = 0
    image_batch_size: int = 256  # images per work item / shard
    strict: bool = False  # job exits 1 when anything failed
    allowed_roots: list[str] = field(default_factory=list)  # besides the input's own folder (--allow-root)

    def validate(self) -> None:
        if not self.output:
            raise ValueError("output is required (a folder or s3:// prefix)")
        if self.image_batch_size < 1:
            raise ValueError(f"image_batch_size must be >= 1, got {self.image_batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or null, got {self.limit}")
        if self.split is not None and not self.split.strip():
            raise ValueError("split must be a split's name (e.g. train) or null")
        super().validate()


def run(config: PreprocessConfig, start=None) -> dict:
    """Preprocess every input of `config.input`; returns the summary (also written as summary.json)."""
    return run_many([config], start=start)


def run_many(configs: list[PreprocessConfig], start=None) -> dict:
    """Several inputs (each config's input, limit and allowed roots) into the one output and face settings of
    the first, in one pass of the face stages: one set of actors starts, and summary.json covers them all.
    `start`, when given, is called once the inputs are read (the job starts Ray there: a bad input list
    then stops it before Ray starts)."""
    from fer_ray.inputs import discover

    if not configs:
        raise ValueError("run_many: no inputs to preprocess")
    first, began = configs[0], time.perf_counter()
    # one output, and the same settings of everything that changes a face row (its fingerprint)
    if len({(c.output, c.fingerprint()) for c in configs}) > 1:
        raise ValueError("run_many: every input goes to one output with the same face settings")
    items, rejected = [], []
    for config in configs:
        found = discover(config.input, limit=config.limit, image_batch_size=config.image_batch_size,
                         seed=config.seed, allowed_roots=config.allowed_roots, split=config.split)
        log.info("%s: %d work items (%d videos/images), %d rejected", config.input, len(found.items),
                 found.num_units, len(found.rejected))
        items += found.items
        rejected += found.rejected
    if start is not None:
        start()
    for reject in rejected:
        log.warning("rejected %s: %s", reject["video_id"], reject["error"])
        shards.write_failure(first.output, reject["video_id"], reject["uri"], reject["stage"], reject["error"])
    rows = run_items(items, first, first.output)
    summary = summarise(rows, rejected, time.perf_counter() - began)
    inputs = [c.input for c in configs]
    storage.write_json(storage.join(first.output, "summary.json"),
                       summary | {"input": inputs[0] if len(inputs) == 1 else inputs, "items_rows": rows,
                                  "geometry": first.face_geometry, "face_size": first.face_size})
    log.info("wrote %s", storage.join(first.output, "summary.json"))
    return summary | {"items_rows": rows}


def run_items(items: list[dict], config: FacesConfig, output: str) -> list[dict]:
    """The face stages over work items (fer_ray.inputs) into `<output>/faces`; returns their summary rows.

    Videos take the split path (DecodeStage -> DetectStage) when `decode_workers > 0`, everything else the
    fused PreprocessStage. The items' `members` (image batches) travel as JSON text, so every block has the
    same flat Arrow schema."""
    from fer_ray import raydata

    # parts no done marker lists: what a crash mid-attempt or before a redo's cleanup left (fer_ray.shards)
    swept = shards.sweep(output, schema.FACES_TABLE)
    if swept:
        log.info("deleted %d face parts no done marker lists (left by an interrupted run)", swept)
    if not items:
        return []
    items, finished = skip_finished(items, config, output)
    if finished:
        log.info("%d of %d items already done with these settings: skipped", len(finished), len(finished) + len(items))
    if not items:
        return finished
    rows = [{**item, MEMBERS: json.dumps(item.get(MEMBERS) or [])} for item in items]
    to_split = [bool(config.decode_workers) and r.get(schema.KIND, "video") == "video" for r in rows]
    split = [r for r, s in zip(rows, to_split) if s]
    fused = [r for r, s in zip(rows, to_split) if not s]
    streams = []
    if fused:
        streams.append(raydata.run_rows(fused, [PreprocessStage.step(config, output, len(fused))]))
    if split:
        steps = [DecodeStage.step(config, output, len(split)), DetectStage.step(config, output, len(split))]
        streams.append(_collected(raydata.run_rows(split, steps), output, config))
    return finished + _drain(streams, len(rows))


def _collected(rows, output: str, config: FacesConfig):
    """The split path's chunk rows, settled per video by the driver (done markers written here)."""
    collector = ChunkCollector(output, config)
    for row in rows:
        summary = collector.add(row)
        if summary is not None:
            yield summary
    yield from collector.unsettled()


def _drain(streams, total: int) -> list[dict]:
    results: list[dict] = []
    failed = frames = 0
    with tqdm(total=total, desc="preprocess", unit="item") as bar:
        for stream in streams:
            for row in stream:
                results.append(row)
                failed += row["status"] == STATUS_FAILED
                frames += int(row["frames"])
                bar.update(1)
                bar.set_postfix(done=len(results) - failed, failed=failed, frames=frames)
    return results


def summarise(rows: list[dict], rejected: list[dict], seconds: float) -> dict:
    by_status = {s: [r for r in rows if r["status"] == s] for s in (STATUS_DONE, STATUS_SKIPPED, STATUS_FAILED)}
    processed = sum(int(r["frames"]) for r in by_status[STATUS_DONE])
    return {
        "items": len(rows) + len(rejected),
        "done": len(by_status[STATUS_DONE]),
        "skipped": len(by_status[STATUS_SKIPPED]),
        "failed": len(by_status[STATUS_FAILED]) + len(rejected),
        "frames": sum(int(r["frames"]) for r in rows if r["status"] != STATUS_FAILED),
        "faces": sum(int(r["faces"]) for r in rows if r["status"] != STATUS_FAILED),
        "frames_processed": processed,
        "seconds": round(seconds, 2),
        "frames_per_second": round(processed / seconds, 2) if seconds > 0 else 0.0,
        "failures": [{"video_id": r["video_id"], "error": r["error"]} for r in by_status[STATUS_FAILED]]
        + [{"video_id": r["video_id"], "error": r["error"]} for r in rejected],
        "warnings": [{"video_id": r["video_id"], "error": r["error"]} for r in by_status[STATUS_DONE] if r["error"]],
        # --all-faces: per video, its face tracks and their lengths (frames with that face)
        "tracks": {r["video_id"]: {int(k): n for k, n in json.loads(r["tracks"]).items()}
                   for r in rows if r.get("tracks")},
    }
