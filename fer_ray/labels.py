"""The ABAW expression label set, the CFC-SP coarse/negative maps, and the Aff-Wild2 EXPR txt format.

Everything that knows class names or indices reads them from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

ABAW_CLASSES: tuple[str, ...] = (
    "Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other",
)
NUM_CLASSES = len(ABAW_CLASSES)
UNANNOTATED = -1
EXPR_HEADER = ",".join(ABAW_CLASSES)

# CFC-SP coarse task: Neutral, Happiness, Surprise, Other, Negative (from the authors' code).
COARSE_CLASSES: tuple[str, ...] = ("Neutral", "Happiness", "Surprise", "Other", "Negative")
COARSE_NEGATIVE = 4
COARSE_OF_ABAW: tuple[int, ...] = (0, 4, 4, 4, 1, 4, 2, 3)
# CFC-SP negative task: Anger, Disgust, Fear, Sadness; -1 for classes outside it.
NEGATIVE_CLASSES: tuple[str, ...] = ("Anger", "Disgust", "Fear", "Sadness")
NEGATIVE_OF_ABAW: tuple[int, ...] = (-1, 0, 1, 2, -1, 3, -1, -1)

# Inverse maps: coarse/negative index -> ABAW index (Negative has no single ABAW class).
ABAW_OF_COARSE: tuple[int, ...] = (0, 4, 6, 7, -1)
ABAW_OF_NEGATIVE: tuple[int, ...] = (1, 2, 3, 5)

TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "expr": ABAW_CLASSES,
    "coarse": COARSE_CLASSES,
    "negative": NEGATIVE_CLASSES,
}

# Names used by the shared image sets and common FER datasets -> ABAW names.
_ALIASES = {
    "neutral": "Neutral", "anger": "Anger", "angry": "Anger", "disgust": "Disgust",
    "fear": "Fear", "happiness": "Happiness", "happy": "Happiness", "sadness": "Sadness",
    "sad": "Sadness", "surprise": "Surprise", "other": "Other", "contempt": "Other",
}


MAX_LABEL_FILE_BYTES = 64 * 1024 * 1024  # ~10 M frames of EXPR text; anything larger is not a label file


class LabelFormatError(ValueError):
    """A label file or label value that does not follow the expected format.

    Messages name the file, the line and what was expected, never the line itself: a label file pointed at
    the wrong file (a config, a key) must not have its contents copied into logs and failure rows."""


def excerpt(text, limit: int = 24) -> str:
    """A value from a user's file for an error message: shown only when it is a short plain word."""
    text = str(text).strip()
    if text and len(text) <= limit and text.isascii() and text.replace("_", "").replace("-", "").isalpha():
        return repr(text)
    return f"(a value of {len(text)} characters, not shown)"


def class_index(name: str | int) -> int:
    """ABAW index of a class name (case-insensitive, common aliases accepted) or an int in range."""
    if isinstance(name, (int, np.integer)):
        if not UNANNOTATED <= int(name) < NUM_CLASSES:
            raise LabelFormatError(f"label {name} outside -1..{NUM_CLASSES - 1}")
        return int(name)
    text = str(name).strip()
    if text.lstrip("-").isdigit():
        return class_index(int(text))
    key = _ALIASES.get(text.lower())
    if key is None:
        raise LabelFormatError(f"unknown expression label {excerpt(name)}; valid: {', '.join(ABAW_CLASSES)}")
    return ABAW_CLASSES.index(key)


def task_labels(labels: Sequence[int] | np.ndarray, task: str) -> np.ndarray:
    """Map ABAW indices to a task's indices; frames outside the task (or unannotated) become -1."""
    labels = np.asarray(labels, dtype=np.int64)
    if task == "expr":
        return np.where((labels >= 0) & (labels < NUM_CLASSES), labels, UNANNOTATED)
    table = {"coarse": COARSE_OF_ABAW, "negative": NEGATIVE_OF_ABAW}.get(task)
    if table is None:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASK_CLASSES)}")
    lut = np.asarray(table + (UNANNOTATED,), dtype=np.int64)  # index -1 -> -1
    return lut[np.where(labels >= 0, labels, -1)]


def parse_expr(text: str, source: str = "<text>") -> np.ndarray:
    """Parse Aff-Wild2 EXPR text: a header line, then one class index (or -1) per frame."""
    lines = text.splitlines()
    if not lines:
        raise LabelFormatError(f"{source}: empty label file")
    header = lines[0].strip().replace(" ", "")
    if header != EXPR_HEADER:
        raise LabelFormatError(f"{source}:1: wrong header; expected {EXPR_HEADER!r}")
    values = []
    for number, line in enumerate(lines[1:], start=2):
        item = line.strip()
        if not item:
            if number == len(lines):  # tolerate one trailing blank line
                continue
            raise LabelFormatError(f"{source}:{number}: empty line")
        try:
            value = int(item)
        except ValueError:
            raise LabelFormatError(f"{source}:{number}: not an integer (expected a class index "
                                   f"-1..{NUM_CLASSES - 1})") from None
        if not UNANNOTATED <= value < NUM_CLASSES:
            raise LabelFormatError(f"{source}:{number}: value {value} outside -1..{NUM_CLASSES - 1}")
        values.append(value)
    return np.asarray(values, dtype=np.int64)


def format_expr(labels: Iterable[int]) -> str:
    """Aff-Wild2 EXPR text for a label sequence (the ABAW submission format)."""
    body = []
    for value in labels:
        value = int(value)
        if not UNANNOTATED <= value < NUM_CLASSES:
            raise LabelFormatError(f"value {value} outside -1..{NUM_CLASSES - 1}")
        body.append(str(value))
    return EXPR_HEADER + "\n" + "".join(f"{v}\n" for v in body)


def read_expr(uri: str) -> np.ndarray:
    """Read an EXPR txt file from any URI storage understands."""
    from fer_ray import storage

    if storage.size(uri) > MAX_LABEL_FILE_BYTES:
        raise LabelFormatError(f"{uri}: unreadable label file: over {MAX_LABEL_FILE_BYTES} bytes")
    try:
        text = storage.read_bytes(uri).decode("utf-8")
    except UnicodeDecodeError:
        raise LabelFormatError(f"{uri}: unreadable label file: not UTF-8 text") from None
    return parse_expr(text, source=uri)


def write_expr(uri: str, labels: Iterable[int]) -> None:
    from fer_ray import storage

    storage.write_bytes(uri, format_expr(labels).encode("utf-8"))
