"""Work items for preprocessing: from a manifest, a directory / S3 prefix of videos, or labelled image sets.

A work item is a dict with the `schema.WORK_ITEM_SCHEMA` columns (video_id, uri, label_uri, kind, subject,
label) plus `members`:

- kind "video": one video file; `label_uri` is its Aff-Wild2 EXPR txt (or None); `members` is empty.
- kind "image" / "face_crop": a *batch* of still images from one labelled set, processed as one shard.
  `video_id` is the batch's shard key (`<set>/batch-00003`), `uri` the set's labels.csv, and `members`
  lists the images, each {video_id: "<set>/<path without extension>", uri, label, subject}. Every image
  becomes one row with its own video_id and frame_index 0; the batch's done marker covers all of them.
  "face_crop" sets (small pre-cropped faces such as ckplus48 / fer2013: the longest side <= 64 px) are
  only resized; "image" sets go through detection and alignment.
  A manifest row may also name a single image (kind column "image" / "face_crop", label column).

Problems found while listing (duplicate ids, empty fields, unknown label names) do not raise: they come
back in `Inputs.rejected` as failure records (video_id, uri, stage="inputs", error) for the job to write.

Inputs are confined: a video, label file or image may only be read from the input's own folder or prefix
(the folder holding the manifest or labels.csv, or the folder / prefix given) or from `allowed_roots` the
user names explicitly (`--allow-root`). Paths are compared after resolving `..`, `file://` and, for local
files, symlinks; a reference outside becomes a rejection and is never read. Rejections and errors never
quote what a file contains: they name the file, the row or line, and what was expected.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from fer_ray import labels, schema, storage
from fer_ray.video import VIDEO_EXTENSIONS

__all__ = [
    "FACE_CROP_MAX_SIDE",
    "IMAGE_EXTENSIONS",
    "KINDS",
    "MEMBERS",
    "InputError",
    "Inputs",
    "discover",
    "from_directory",
    "from_image_set",
    "from_manifest",
    "item_fingerprint",
    "resolve",
    "within",
    "work_item",
]

log = logging.getLogger(__name__)

MEMBERS = "members"  # image batches: the images of the shard (see the module docstring)
KINDS = ("video", "image", "face_crop")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LABELS_CSV = "labels.csv"
FACE_CROP_MAX_SIDE = 64
STAGE = "inputs"


class InputError(ValueError):
    """An input list the job cannot read as asked (a missing column, a split it lacks): the job stops with
    this one line before it starts Ray."""


@dataclass
class Inputs:
    """Work items to run, and inputs rejected before running (failure records)."""

    items: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    def extend(self, other: Inputs) -> Inputs:
        self.items.extend(other.items)
        self.rejected.extend(other.rejected)
        return self

    @property
    def num_units(self) -> int:
        """Videos plus images (a batch counts its images)."""
        return sum(len(item[MEMBERS]) or 1 for item in self.items)


def work_item(video_id: str, uri: str, label_uri: str | None = None, kind: str = "video",
              subject: str | None = None, label: int = labels.UNANNOTATED,
              members: list[dict] | None = None, subjects: str | None = None) -> dict:
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    return {
        schema.VIDEO_ID: str(video_id), schema.URI: str(uri), schema.LABEL_URI: label_uri or None,
        schema.KIND: kind, schema.SUBJECT: subject or None, schema.LABEL: int(label),
        MEMBERS: list(members or []), schema.SUBJECTS: subjects or None,
    }


def member(video_id: str, uri: str, label: int, subject: str | None) -> dict:
    return {schema.VIDEO_ID: video_id, schema.URI: uri, schema.LABEL: int(label), schema.SUBJECT: subject or None}


def item_fingerprint(item: dict) -> str:
    """A short hash of what an item reads; stored in its done marker so a changed input is redone.

    Besides the names it covers the size and modification time of the item's file and label file, so a
    file overwritten at the same URI no longer matches (an image batch's member images are named only)."""
    keys = (schema.URI, schema.LABEL_URI, schema.KIND, MEMBERS)
    data = {k: item.get(k) for k in keys}
    data["stat"] = [_stat(item.get(k)) for k in (schema.URI, schema.LABEL_URI)]
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _stat(uri) -> list | None:
    """[size, mtime in ns] of a file, None when there is no such file or it cannot be asked (it then fails
    where it is read, with its own reason)."""
    if not uri:
        return None
    try:
        fs, path = storage.filesystem(str(uri))
        info = fs.get_file_info(path)
    except (OSError, ValueError):
        return None
    if info.type.name != "File":
        return None
    return [info.size, info.mtime_ns]


def _reject(video_id: str, uri: str, error: str) -> dict:
    return {schema.VIDEO_ID: str(video_id), schema.URI: str(uri), schema.STAGE: STAGE, schema.ERROR: error}


# --------------------------------------------------------------------------- confinement


def canonical(uri: str) -> str:
    """A URI in the one form confinement compares: s3://bucket/key with `..` resolved, or a local real path
    (file:// dropped, `..` and symlinks resolved). Other schemes are returned as given (they match only a
    root spelled the same way)."""
    uri = str(uri).strip()
    if storage.is_s3(uri):
        bucket, _, key = uri[len("s3://"):].partition("/")
        key = posixpath.normpath("/" + key).lstrip("/")  # `..` cannot climb above the bucket
        return f"s3://{bucket}/{key}".rstrip("/")
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" in uri:
        return uri
    return os.path.realpath(os.path.abspath(uri))


class Roots:
    """The folders / prefixes one listing may read from, canonical once; `uri in roots` checks a file.

    Local files: a real path per file would cost an lstat per path component for every image of a large
    set, so each folder's real path is resolved once and only the file itself is checked for a symlink."""

    def __init__(self, roots):
        self.roots = tuple(canonical(r).rstrip("/") for r in roots)
        self._real_dirs: dict[str, str] = {}

    def _canonical(self, uri: str) -> str:
        uri = str(uri).strip()
        local = uri[len("file://"):] if uri.startswith("file://") else uri
        if storage.is_s3(uri) or "://" in local:
            return canonical(uri)
        path = os.path.abspath(local)
        if os.path.islink(path):
            return os.path.realpath(path)
        head, name = os.path.split(path)
        if head not in self._real_dirs:
            self._real_dirs[head] = os.path.realpath(head)
        return os.path.join(self._real_dirs[head], name)

    def __contains__(self, uri: str) -> bool:
        path = self._canonical(uri)
        return any(path == root or path.startswith(root + "/") for root in self.roots)


def within(uri: str, roots) -> bool:
    """True when `uri` is one of `roots` or lies under one of them (compared in canonical form)."""
    return uri in (roots if isinstance(roots, Roots) else Roots(roots))


def _roots(own: str, allowed_roots) -> Roots:
    return Roots((own, *[str(r) for r in (allowed_roots or ())]))


def _outside(what: str) -> str:
    return f"{what} is outside the allowed input roots (the input's own folder and --allow-root)"


# --------------------------------------------------------------------------- URIs


def _parent(uri: str) -> str:
    uri = str(uri).rstrip("/")
    return uri.rsplit("/", 1)[0] if "/" in uri else "."


def resolve(uri: str, base: str) -> str:
    """`uri` as given when absolute (s3://, file://, /path), else relative to the folder `base`."""
    uri = str(uri).strip()
    if "://" in uri or os.path.isabs(uri):
        return uri
    if storage.is_s3(base) or str(base).startswith("file://"):
        scheme, rest = str(base).split("://", 1)
        return f"{scheme}://" + posixpath.normpath(posixpath.join(rest, uri))
    return os.path.normpath(os.path.join(base, uri))


def _relative(uri: str, root: str) -> str:
    root = str(root).rstrip("/") + "/"
    return uri[len(root):] if uri.startswith(root) else storage.basename(uri)


def _without_ext(path: str) -> str:
    head, name = posixpath.split(path)
    name = name.rsplit(".", 1)[0] if "." in name else name
    return posixpath.join(head, name) if head else name


def _root_uri(source: str) -> str:
    """Listing returns absolute local paths (or s3:// / file:// URIs): make the root comparable."""
    source = str(source).rstrip("/")
    if storage.is_s3(source) or source.startswith("file://"):
        return source
    return os.path.abspath(source)


# --------------------------------------------------------------------------- tables


def _read_table(uri: str):
    import pandas as pd

    data = storage.read_bytes(uri)
    if uri.lower().endswith(".parquet"):
        frame = storage.read_parquet(uri).to_pandas()
        return frame.astype(object).where(frame.notna(), "")
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def from_manifest(uri: str, allowed_roots=()) -> Inputs:
    """Items from a CSV or Parquet manifest: video_id, uri[, label_uri][, subject][, kind][, label].

    Relative uris are resolved against the manifest's folder. Every row of an id that appears more than
    once is rejected (which one is meant is unknowable), with the row numbers in the reason. A row whose
    video or label file lies outside the manifest's folder and `allowed_roots` is rejected.
    """
    table = _read_table(uri)
    missing = {schema.VIDEO_ID, schema.URI} - set(table.columns)
    if missing:
        # the header is the file's content: say what is missing, never quote what is there
        raise InputError(f"{uri}: manifest lacks column(s) {', '.join(sorted(missing))} "
                         f"(its header row has {len(table.columns)} column(s))")
    base = _parent(uri)
    roots = _roots(base, allowed_roots)
    records = table.to_dict("records")
    counts = Counter(_text(r[schema.VIDEO_ID]) for r in records)
    rows_of: dict[str, list[int]] = {}
    for number, record in enumerate(records, start=2):  # CSV line numbers (header is line 1)
        rows_of.setdefault(_text(record[schema.VIDEO_ID]), []).append(number)
    out = Inputs()
    seen_duplicates: set[str] = set()
    for number, record in enumerate(records, start=2):
        video_id = _text(record[schema.VIDEO_ID])
        raw_uri = _text(record[schema.URI])
        where = f"{uri} row {number}"
        if not video_id:
            out.rejected.append(_reject(f"{storage.basename(uri)}-row-{number}", raw_uri, f"{where}: empty video_id"))
            continue
        if counts[video_id] > 1:
            if video_id not in seen_duplicates:
                seen_duplicates.add(video_id)
                rows = ", ".join(map(str, rows_of[video_id]))
                out.rejected.append(_reject(video_id, raw_uri, f"{uri}: duplicate video_id {video_id!r} "
                                                               f"(rows {rows}); none of them is processed"))
            continue
        if not raw_uri:
            out.rejected.append(_reject(video_id, "", f"{where}: empty uri"))
            continue
        label_uri = _text(record.get(schema.LABEL_URI))
        kind = _text(record.get(schema.KIND)) or "video"
        if kind not in KINDS:
            out.rejected.append(_reject(video_id, raw_uri, f"{where}: kind {labels.excerpt(kind)} is not one of "
                                                             f"{', '.join(KINDS)}"))
            continue
        try:
            label = labels.class_index(_text(record.get(schema.LABEL)) or labels.UNANNOTATED)
        except labels.LabelFormatError as exc:
            out.rejected.append(_reject(video_id, raw_uri, f"{where}: {exc}"))
            continue
        item_uri = resolve(raw_uri, base)
        label_uri = resolve(label_uri, base) if label_uri else None
        if not within(item_uri, roots):
            what = "video file" if kind == "video" else "image"
            out.rejected.append(_reject(video_id, item_uri, f"{where}: {_outside(what)}"))
            continue
        if label_uri and not within(label_uri, roots):
            out.rejected.append(_reject(video_id, item_uri, f"{where}: {_outside('label file')}"))
            continue
        subject = _text(record.get(schema.SUBJECT)) or None
        members = [member(video_id, item_uri, label, subject)] if kind != "video" else []
        out.items.append(work_item(video_id, item_uri, label_uri, kind=kind, subject=subject, label=label,
                                   members=members))
    return out


# --------------------------------------------------------------------------- image sets


def _image_side(uri: str) -> int:
    from PIL import Image

    with Image.open(io.BytesIO(storage.read_bytes(uri))) as image:
        return max(image.size)


def from_image_set(labels_uri: str, limit: int | None = None, batch_size: int = 256, seed: int = 0,
                   kind: str | None = None, name: str | None = None, allowed_roots=(),
                   split: str | None = None) -> Inputs:
    """Batches of images from a labelled set: `labels.csv` with path,label[,subject][,split] (paths relative
    to it).

    An image outside the labels.csv's folder and `allowed_roots` is rejected before anything reads it.
    `split` keeps only the rows of that split (e.g. fer2013's "train"), before `limit` takes a seeded
    random subset. Images are batched in a seeded random order (see below).
    `kind` None: "face_crop" when the first image's longest side is <= FACE_CROP_MAX_SIDE, else "image".
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    table = _read_table(labels_uri)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise InputError(f"{labels_uri}: labels.csv lacks column(s) {', '.join(sorted(missing))} "
                         f"(its header row has {len(table.columns)} column(s))")
    base = _parent(labels_uri)
    roots = _roots(base, allowed_roots)
    name = name or storage.basename(base)
    records = _split_rows(table, labels_uri, split)
    # Seeded shuffle before batching: image sets are often sorted by class, and training streams shards
    # nearly in file order, so every shard should mix classes and subjects. `limit` keeps the first ones.
    order = np.random.default_rng(seed).permutation(len(records))
    if limit is not None:
        order = order[:max(0, int(limit))]
    records = [records[i] for i in order]
    out = Inputs()
    members = []
    uris = [resolve(_text(record["path"]), base) for record in records]
    outside = [u for u in uris if not u.startswith(base.rstrip("/") + "/")]
    common = posixpath.commonpath([_parent(u) for u in outside]) if outside else ""
    for record, image_uri in zip(records, uris):
        # id: <set>/<path relative to labels.csv>, or relative to the images' common folder when they
        # live elsewhere (absolute paths), so ids never carry a machine's directory layout
        inside = image_uri.startswith(base.rstrip("/") + "/")
        video_id = f"{name}/{_without_ext(_relative(image_uri, base if inside else common))}"
        if not within(image_uri, roots):
            out.rejected.append(_reject(video_id, image_uri, f"{labels_uri}: {_outside('image')}"))
            continue
        try:
            label = labels.class_index(_text(record["label"]) or labels.UNANNOTATED)
        except labels.LabelFormatError as exc:
            out.rejected.append(_reject(video_id, image_uri, f"{labels_uri}: {exc}"))
            continue
        members.append(member(video_id, image_uri, label, _text(record.get(schema.SUBJECT))))
    if not members:
        return out
    if kind is None:
        try:
            kind = "face_crop" if _image_side(members[0][schema.URI]) <= FACE_CROP_MAX_SIDE else "image"
        except (OSError, ValueError) as exc:
            log.warning("%s: cannot size %s (%s); treating the set as full images", labels_uri,
                        members[0][schema.URI], exc)
            kind = "image"
    for number, start in enumerate(range(0, len(members), batch_size)):
        out.items.append(work_item(f"{name}/batch-{number:05d}", labels_uri, kind=kind,
                                   members=members[start:start + batch_size]))
    log.info("%s: %d images (%s) in %d batches", name, len(members), kind, len(out.items))
    return out


def _split_rows(table, labels_uri: str, split: str | None) -> list[dict]:
    """The rows of `split` (all rows when None). A set with a split column used whole gets a warning: a
    training run fed fer2013's labels.csv whole also trains on its test split."""
    has_split = schema.SPLIT in table.columns
    if split is None:
        splits = table[schema.SPLIT].nunique() if has_split else 0
        if splits > 1:
            log.warning("%s: %d splits in its %s column, all of them used (--split NAME takes one)",
                        labels_uri, splits, schema.SPLIT)
        return table.to_dict("records")
    if not has_split:
        raise InputError(f"{labels_uri}: split {split!r} asked for, but labels.csv has no {schema.SPLIT} column")
    kept = table[table[schema.SPLIT].map(_text) == split]
    if kept.empty:  # the file's own split names are not quoted: they are its contents
        raise InputError(f"{labels_uri}: no row of split {split!r} among its {len(table)} rows")
    return kept.to_dict("records")


# --------------------------------------------------------------------------- directories


def from_directory(uri: str, limit: int | None = None, image_batch_size: int = 256, seed: int = 0,
                   allowed_roots=(), split: str | None = None) -> Inputs:
    """Every video under a folder or S3 prefix (id: its path relative to the folder, no extension), with
    `<stem>.txt` beside it as its label file, plus every labelled image set (a `labels.csv`) under it.
    A file that resolves outside the folder and `allowed_roots` (a symlink out of it) is rejected."""
    root = _root_uri(uri)
    roots = _roots(root, allowed_roots)
    files = storage.list_files(root)
    set_roots = sorted(_parent(f) for f in files if storage.basename(f) == LABELS_CSV)
    out = Inputs()
    for set_root in set_roots:  # a set is named after its folder, however the job was pointed at it
        out.extend(from_image_set(storage.join(set_root, LABELS_CSV), limit=limit, batch_size=image_batch_size,
                                  seed=seed, allowed_roots=roots.roots, split=split))
    present = set(files)
    for file in files:
        if not file.lower().endswith(VIDEO_EXTENSIONS):
            continue
        if any(file.startswith(r.rstrip("/") + "/") for r in set_roots):
            continue
        video_id = _without_ext(_relative(file, root))
        label_uri = file.rsplit(".", 1)[0] + ".txt"
        label_uri = label_uri if label_uri in present else None
        # Aff-Wild2 labels two people of a video as <stem>_left.txt and <stem>_right.txt: annotated per person
        sides = [file.rsplit(".", 1)[0] + f"_{side}.txt" for side in schema.SUBJECT_SIDES]
        subjects = ",".join(schema.SUBJECT_SIDES) if not label_uri and all(s in present for s in sides) else None
        if not within(file, roots):
            out.rejected.append(_reject(video_id, file, f"{uri}: {_outside('video file')}"))
        elif label_uri and not within(label_uri, roots):
            out.rejected.append(_reject(video_id, file, f"{uri}: {_outside('label file')}"))
        else:
            out.items.append(work_item(video_id, file, label_uri, subjects=subjects))
    if not out.items and not out.rejected:
        log.warning("%s: no videos (%s) and no labels.csv found", uri, " ".join(VIDEO_EXTENSIONS))
    return out


def discover(source: str, limit: int | None = None, image_batch_size: int = 256, seed: int = 0,
             allowed_roots=(), split: str | None = None) -> Inputs:
    """Work items from a manifest (.csv/.parquet), a `labels.csv` image set, a folder/prefix, or one video.

    `allowed_roots`: folders / prefixes besides the input's own that its files may be read from.
    `split`: only that split's rows of an image set (its labels.csv's split column)."""
    source = str(source)
    lower = source.lower().rstrip("/")
    if storage.basename(lower) == LABELS_CSV:
        result = from_image_set(source, limit=limit, batch_size=image_batch_size, seed=seed,
                                allowed_roots=allowed_roots, split=split)
    elif lower.endswith((".csv", ".parquet")):
        result = from_manifest(source, allowed_roots=allowed_roots)
    elif lower.endswith(VIDEO_EXTENSIONS) and not storage.is_dir(source):
        result = Inputs(items=[work_item(storage.stem(source), source)])
    elif storage.is_dir(source) or storage.is_s3(source):
        result = from_directory(source, limit=limit, image_batch_size=image_batch_size, seed=seed,
                                allowed_roots=allowed_roots, split=split)
    else:
        raise FileNotFoundError(f"input {source!r} is not a manifest, labels.csv, video or folder that exists")
    ids = Counter(item[schema.VIDEO_ID] for item in result.items)
    clashes = sorted(v for v, n in ids.items() if n > 1)
    if clashes:  # e.g. a.mp4 and a.avi in one folder: both would write the same shard
        result.rejected.extend(_reject(v, "", f"duplicate video_id {v!r} from different files; none processed")
                               for v in clashes)
        result.items = [item for item in result.items if item[schema.VIDEO_ID] not in set(clashes)]
    return result
