"""The driver side of the split decode -> detect path (fer_ray.preprocess.stages)."""

from __future__ import annotations

from fer_ray import schema, shards
from fer_ray.preprocess.items import (
    FACES,
    PHASE_COLUMNS,
    STAGE_NAME,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_SKIPPED,
)
from fer_ray.preprocess.stages import END, FAILED_ROW, SKIPPED_ROW, rewrite_parts, subjects_info, tracks_text


class ChunkCollector:
    """Driver side of the split path: takes DetectStage rows in any order and, per video, writes the done
    marker once its "end" row and every chunk are in (or the failure record on a failed row); `add` returns
    the video's summary row (SUMMARY_COLUMNS) when it is settled, else None."""

    def __init__(self, output: str, config=None):
        """`config`: the face stages' FacesConfig; with `all_faces`, the chunks' track ids are linked
        video-wide once every chunk is in (their parts rewritten) before the done marker."""
        self.output = output
        self.config = config
        self.videos: dict[str, dict] = {}
        self.settled: set[str] = set()

    def add(self, row: dict) -> dict | None:
        video_id = str(row[schema.VIDEO_ID])
        if video_id in self.settled:
            return None
        state = self.videos.setdefault(video_id, {"parts": {}, "faces": 0, "frames": 0, "seconds": 0.0,
                                                  "expected": None, "num_frames": 0, "row": row, "tracked": {}})
        state["seconds"] += float(row["seconds"])
        status = row["status"]
        if status == SKIPPED_ROW:
            return self._settle(video_id, STATUS_SKIPPED, int(row["count"]), int(row["faces"]))
        if status == FAILED_ROW:
            shards.write_failure(self.output, video_id, str(row[schema.URI]), STAGE_NAME, str(row["error"]),
                                 fingerprint=_source(row))
            return self._settle(video_id, STATUS_FAILED, 0, 0, str(row["error"]))
        if status == END:
            state["expected"] = int(row["count"])
        else:
            state["parts"][int(row["chunk"])] = str(row["part"])
            if row.get("tracked"):
                state["tracked"][int(row["chunk"])] = str(row["tracked"])
            state["faces"] += int(row["faces"])
            state["frames"] += int(row["count"])
            state["num_frames"] = int(row["num_frames"])
        if state["expected"] is not None and len(state["parts"]) == state["expected"]:
            parts = [state["parts"][k] for k in sorted(state["parts"])]
            tracks = self._link(state) if self.config is not None and self.config.all_faces else {}
            shards.mark_done(self.output, FACES, video_id, parts, frames=state["frames"], faces=state["faces"],
                             num_frames=state["num_frames"], uri=str(row[schema.URI]),
                             fingerprint=str(row["fingerprint"]), kind="video",
                             seconds=round(state["seconds"], 3), **tracks, **subjects_info(row))
            return self._settle(video_id, STATUS_DONE, state["frames"], state["faces"]) | {"tracks": tracks_text(tracks)}
        return None

    def _link(self, state: dict) -> dict:
        """Every-face mode: the video's chunk-local track ids made video-wide (fer_ray.faces.link_chunks),
        short tracks dropped; each part rewritten; the done marker's track info."""
        from fer_ray.preprocess.faces import link_tracked, relabel_tracks

        mapping, lengths = link_tracked(state["tracked"], self.config)
        state["faces"] = rewrite_parts(state["parts"],
                                       lambda chunk, table: relabel_tracks(table, chunk, mapping, set(lengths)))
        dropped = len(set(mapping.values()) - set(lengths))
        return {"tracks": {str(t): n for t, n in sorted(lengths.items())}, "short_tracks_dropped": dropped}

    def _settle(self, video_id: str, status: str, frames: int, faces: int, error: str | None = None) -> dict:
        state = self.videos.pop(video_id)
        self.settled.add(video_id)
        # the split path's stages report their seconds only: no start time or phases (SUMMARY_COLUMNS)
        return {"video_id": video_id, "kind": "video", "status": status, "frames": frames, "faces": faces,
                "seconds": round(state["seconds"], 3), "error": error, "started_at": None, "tracks": "",
                **dict.fromkeys(PHASE_COLUMNS)}

    def unsettled(self) -> list[dict]:
        """Summary rows (failed) of videos whose stream ended incomplete: a lost chunk or end row."""
        rows = []
        for video_id in list(self.videos):
            message = "incomplete: not every decoded chunk came back from the detect stage"
            row = self.videos[video_id]["row"]
            shards.write_failure(self.output, video_id, str(row[schema.URI]), STAGE_NAME, message,
                                 fingerprint=_source(row))
            rows.append(self._settle(video_id, STATUS_FAILED, 0, 0, message))
        return rows


def _source(row: dict) -> str:
    """The input part (fer_ray.inputs.item_fingerprint) of a chunk row's "<input>-<settings>" fingerprint."""
    return str(row.get("fingerprint") or "").split("-", 1)[0]
