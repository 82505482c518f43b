"""The face stages' settings: what turns videos and images into face rows, and what each actor asks for.

The preprocess job's config (fer_ray.jobs.preprocess.PreprocessConfig) is these settings plus where to
read and write; the annotate job nests them (`preprocess:`) for the videos it preprocesses itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from fer_ray.video import MAX_PIXELS

GEOMETRIES = ("arcface", "fer")  # fer_ray.faces.align.GEOMETRIES' names (kept here: this module imports no torch)


@dataclass
class DetectorConfig:
    """fer_ray.faces.FaceDetector options."""

    device: str = "cpu"
    min_face_size: int = 40
    detect_size: int | None = 320
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    min_score: float = 0.9

    def validate(self) -> None:
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"detector.device must be 'cpu' or 'cuda[:n]', got {self.device!r}")
        if self.min_face_size < 8:
            raise ValueError(f"detector.min_face_size must be >= 8, got {self.min_face_size}")
        if self.detect_size is not None and self.detect_size < 32:
            raise ValueError(f"detector.detect_size must be >= 32 or null, got {self.detect_size}")
        if len(self.thresholds) != 3 or not all(0.0 < t < 1.0 for t in self.thresholds):
            raise ValueError(f"detector.thresholds must be 3 values in (0, 1), got {self.thresholds}")
        if not 0.0 <= self.min_score < 1.0:
            raise ValueError(f"detector.min_score must be in [0, 1), got {self.min_score}")


@dataclass
class FacesConfig:
    """Frame selection, face crops and the face stages' actors (fer_ray.preprocess.stages)."""

    stride: int = 1  # decode every stride-th frame
    max_frames: int | None = None  # at most this many decoded frames per video (after stride)
    face_size: int = 112  # aligned crop side, pixels
    # The template faces are aligned to (fer_ray.faces.align.GEOMETRIES): "arcface" (tight, the papers' 112-px
    # crops; pre-cropped 48-px sets are only resized) or "fer" (FER2013's loose framing, with face_size 48:
    # photos and frames aligned to it, and pre-cropped faces too wherever the detector finds their landmarks
    # once upsampled). None: "arcface" for the preprocess job; the annotate job takes models.json's.
    geometry: Literal["arcface", "fer"] | None = None
    track_every: int = 1  # full detection every k decoded frames, O-net tracking in between
    # False: one face per frame (the largest, or the one that follows the previous frame's face). True: every
    # face, each with a track id (fer_ray.faces.MultiFaceTracker); a face missing for up to max_gap frames
    # keeps its id, and tracks with fewer than min_track_length faces are dropped when the video ends.
    all_faces: bool = False
    max_gap: int = 10
    min_track_length: int = 10
    chunk_size: int = 32  # frames decoded, detected and written at a time (one part each)
    jpeg_quality: int = 95
    max_pixels: int = MAX_PIXELS  # videos with larger frames fail instead of exhausting memory
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    num_workers: int = 2  # detector actors at most
    worker_cpus: float = 1.0  # CPUs reserved per actor (fractions allowed); torch threads = max(1, int())
    worker_gpus: float = 0.0
    # 0: each detect actor decodes its own videos. N > 0: N CPU actors decode videos into chunks that feed
    # the detect actors (GPU nodes then only detect and align; see DecodeStage).
    decode_workers: int = 0
    decode_cpus: float = 0.5  # CPUs reserved per decode actor

    def validate(self) -> None:
        for name in ("stride", "face_size", "track_every", "chunk_size", "num_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or null, got {self.max_frames}")
        if self.geometry not in (None, *GEOMETRIES):
            raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)} (or null), got {self.geometry!r}")
        if not 16 <= self.face_size <= 1024:
            raise ValueError(f"face_size must be in 16..1024, got {self.face_size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.max_gap < 0 or self.min_track_length < 1:
            raise ValueError(f"max_gap must be >= 0 and min_track_length >= 1, got {self.max_gap}, "
                             f"{self.min_track_length}")
        if self.decode_workers < 0 or self.decode_cpus <= 0:
            raise ValueError("decode_workers must be >= 0 and decode_cpus > 0")
        if self.worker_cpus <= 0 or self.worker_gpus < 0:
            raise ValueError("worker_cpus must be > 0 and worker_gpus >= 0")
        if self.detector.device.startswith("cuda") and self.worker_gpus <= 0:
            raise ValueError("detector.device is CUDA but worker_gpus is 0: set worker_gpus (e.g. 0.5)")
        self.detector.validate()

    @property
    def face_geometry(self) -> str:
        return self.geometry or "arcface"

    def fingerprint(self) -> str:
        """Hash of the settings that change a shard's rows (not where or how fast it runs)."""
        keys = ("stride", "max_frames", "face_size", "track_every", "jpeg_quality")
        data = {k: getattr(self, k) for k in keys} | {"detector": asdict(self.detector)}
        if self.all_faces:  # one-face outputs keep the fingerprint they had before these settings existed
            data |= {k: getattr(self, k) for k in ("all_faces", "max_gap", "min_track_length")}
        if self.face_geometry != "arcface":  # likewise for outputs made before there was a choice
            data["geometry"] = self.face_geometry
        return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

