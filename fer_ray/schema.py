"""Names and Arrow schemas of every table fer-ray writes: its folders and its columns. Nothing else spells one.

Output layout under a job's output URI (see README "Data layout"; the folder names are the *_TABLE / *_DIR
constants below):
  faces/<video_key>/part-<k>.parquet      one file per decoded chunk, deterministic names (reruns overwrite)
  faces/<video_key>/part-<attempt>-<k>.parquet  the same for a redo (new attempt id; fer_ray.shards)
  faces/_done/<video_key>.json            written last: the video is complete only once this exists
  failures/<video_key>.json               one JSON object per failed work item (FAILURE_SCHEMA fields)
  predictions/<video_key>/part-*.parquet, predictions/_done/<video_key>.json, submission/<video_key>.txt
                                          (one part and one <video_key>_track<id>.txt per face track when
                                          a video has several)
  logits/<video_key>/part-*.parquet, logits/_done/<video_key>.json (annotate --keep-logits)
  models.json                             the training job's model index, read by annotate
"""

from __future__ import annotations

import pyarrow as pa

# Tables and folders under a job's output (fer_ray.shards writes the tables part by part)
FACES_TABLE = "faces"  # preprocess: FACES_SCHEMA
LOGITS_TABLE = "logits"  # annotate --keep-logits: LOGITS_SCHEMA
PREDICTIONS_TABLE = "predictions"  # annotate: PREDICTIONS_SCHEMA
FAILURES_DIR = "failures"  # every job: one FAILURE_SCHEMA JSON object per failed work item
SUBMISSION_DIR = "submission"  # annotate: one ABAW EXPR txt per video
DONE_DIR = "_done"  # inside a table: one done marker per complete video
MODELS_INDEX = "models.json"  # train_all writes it beside the models, annotate reads it

# Work items (inputs.py)
VIDEO_ID = "video_id"
URI = "uri"
LABEL_URI = "label_uri"
KIND = "kind"  # "video" | "image" | "face_crop"
SUBJECT = "subject"
SPLIT = "split"  # an image set's labels.csv: the split a row belongs to (fer2013: train / test)
# A video annotated per person (Aff-Wild2's `<video>_left.txt` / `<video>_right.txt`): the subject names, in
# left-to-right order, comma-separated ("left,right"); the two main face tracks take these names.
SUBJECTS = "subjects"
SUBJECT_SIDES = ("left", "right")

# Faces table (preprocessing output)
FRAME_INDEX = "frame_index"
TIMESTAMP = "timestamp"
FACE = "face"  # encoded image bytes (JPEG/PNG), empty when no face
BBOX = "bbox"  # [x1, y1, x2, y2] in source-frame pixels
LANDMARKS = "landmarks"  # [x0, y0, ..., x4, y4]: eyes, nose, mouth corners, source-frame pixels
DET_SCORE = "det_score"
LABEL = "label"  # ABAW index, -1 unannotated
REASON = "reason"  # null when a face was found, else why not ("no_face", ...)
NUM_FRAMES = "num_frames"  # frames the source video has (same on every row of a video)
# Which face of the video a row is about. One-face mode (the default): 0 on every row. Every-face mode
# (preprocess --all-faces): the face's track id (0, 1, ... by first appearance), NO_TRACK on a frame's one
# no-face row. Downstream work (Smooth Predicting, the cascade, gap fill) runs per (video, track).
TRACK_ID = "track_id"
NO_TRACK = -1
# annotate --adapt-bn, between reading faces and the logits stage only (never written): the normalisation group
# a face row is shuffled with (fer_ray.infer.adapt.groups)
NORM_GROUP = "norm_group"

# Failures table
STAGE = "stage"
ERROR = "error"
ATTEMPTS = "attempts"
FINGERPRINT = "fingerprint"

# Logits / predictions
MODEL = "model"
SCORES = "scores"
LABEL_NAME = "label_name"
PROBS = "probs"
COARSE_PROBS = "coarse_probs"
NEGATIVE_PROBS = "negative_probs"
FACE_FOUND = "face_found"
FILLED = "filled"
SYSTEM = "system"
# What decided a frame's label, as a person reads it: "Negative 0.30 -> Disgust 0.83" for a cascade frame
# routed to the negative net (each step's own share, not their product), else "Happiness 0.91".
DECISION = "decision"
MODEL_VERSION = "model_version"

WORK_ITEM_SCHEMA = pa.schema([
    (VIDEO_ID, pa.string()),
    (URI, pa.string()),
    (LABEL_URI, pa.string()),
    (KIND, pa.string()),
    (SUBJECT, pa.string()),
    (LABEL, pa.int64()),
    (SUBJECTS, pa.string()),
])

FACES_SCHEMA = pa.schema([
    (VIDEO_ID, pa.string()),
    (FRAME_INDEX, pa.int64()),
    (TIMESTAMP, pa.float64()),
    (FACE, pa.binary()),
    (BBOX, pa.list_(pa.float32(), 4)),
    (LANDMARKS, pa.list_(pa.float32(), 10)),
    (DET_SCORE, pa.float32()),
    (LABEL, pa.int64()),
    (REASON, pa.string()),
    (SUBJECT, pa.string()),
    (NUM_FRAMES, pa.int64()),
    (TRACK_ID, pa.int64()),
])

FAILURE_SCHEMA = pa.schema([
    (VIDEO_ID, pa.string()),
    (URI, pa.string()),
    (STAGE, pa.string()),
    (ERROR, pa.string()),
    (ATTEMPTS, pa.int64()),  # runs in a row that failed on this input (annotate gives up at max_attempts)
    (FINGERPRINT, pa.string()),  # the input's fingerprint when it failed ("" when unknown)
])

LOGITS_SCHEMA = pa.schema([
    (VIDEO_ID, pa.string()),
    (FRAME_INDEX, pa.int64()),
    (MODEL, pa.string()),
    (SCORES, pa.list_(pa.float32())),
    (TRACK_ID, pa.int64()),
])

PREDICTIONS_SCHEMA = pa.schema([
    (VIDEO_ID, pa.string()),
    (FRAME_INDEX, pa.int64()),
    (TIMESTAMP, pa.float64()),
    (LABEL, pa.int64()),
    (LABEL_NAME, pa.string()),
    (PROBS, pa.list_(pa.float32(), 8)),
    (COARSE_PROBS, pa.list_(pa.float32())),
    (NEGATIVE_PROBS, pa.list_(pa.float32())),
    (FACE_FOUND, pa.bool_()),
    (FILLED, pa.bool_()),
    (SYSTEM, pa.string()),
    (MODEL_VERSION, pa.string()),
    (TRACK_ID, pa.int64()),
    (DECISION, pa.string()),
])

# Reasons a frame or video yields no face / no row; stable strings, users filter on them.
REASON_NO_FACE = "no_face"
REASON_LOW_SCORE = "low_score"


# Per-model logits columns of the rows between the logits stage and post-processing: "scores:<task>:<name>".
LOGITS_COLUMN_PREFIX = "scores:"


def logits_column(model_key: str) -> str:
    return LOGITS_COLUMN_PREFIX + model_key.replace("/", ":")


def model_key_of_column(name: str) -> str:
    return name[len(LOGITS_COLUMN_PREFIX):].replace(":", "/", 1)
