"""Evaluation outputs: metrics.json, tables as CSV and Markdown, and an HTML report with PNG plots.

Layout under `<output>` (a local directory or s3:// prefix; every write goes through fer_ray.storage):
  metrics.json                 summary numbers (NaN written as null, so it is strict JSON)
  tables/<name>.csv, .md       one pair per table (overall, per_class, per_video, table1..table4)
  plots/*.png                  confusion matrix, per-class F1, SP window sweep, one timeline per video
  report.html                  links the tables' content inline and the PNGs by relative path;
                               no scripts, styles or images from elsewhere, so the folder can be copied
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from fer_ray import labels, storage
from fer_ray.evaluate import plots

__all__ = ["json_ready", "markdown_table", "write_tables", "write_report"]

PLOTS_DIR = "plots"
TABLES_DIR = "tables"


def json_ready(value):
    """Plain JSON values: numpy scalars/arrays unwrapped, NaN and inf become None."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if not math.isfinite(value) else f"{value:.4f}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """GitHub-flavoured Markdown table (pandas' own needs the optional tabulate package)."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def write_tables(output: str, tables: Mapping[str, pd.DataFrame]) -> None:
    for name, frame in tables.items():
        storage.write_text(storage.join(output, TABLES_DIR, f"{name}.csv"), frame.to_csv(index=False))
        storage.write_text(storage.join(output, TABLES_DIR, f"{name}.md"), markdown_table(frame))


def _html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, na_rep="", float_format=lambda v: f"{v:.3f}", border=0)


def _write_plot(output: str, name: str, png: bytes) -> str:
    """Write one PNG; returns its path relative to report.html."""
    relative = f"{PLOTS_DIR}/{name}.png"
    storage.write_bytes(storage.join(output, relative), png)
    return relative


def _figure(src: str, alt: str) -> str:
    return f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}"></figure>'


# Tables titled as the papers title them; the CSV/Markdown files keep every column under the plain names.
TITLES = {
    "overall": "All frames",
    "per_class": "Per class",
    "per_video": "Per video",
    "tracks": "Face tracks: frames with each face, and the label file each is scored against",
    "table1": "Table 1: baseline, + C-F (coarse-to-fine cascade), + SP (Smooth Predicting)",
    "table2": "Table 2: coarse-net and negative-net backbone combinations (cascade)",
    "table3": "Table 3: each backbone alone on its own task (no SP)",
    "table4": "Table 4: Smooth Predicting window sweep of the full system",
}
# Columns a reader needs on the page; the rest (raw system strings, temporal detail) stay in tables/*.csv.
SHOWN = {
    "per_video": ["video_id", "frames", "annotated", "filled_frames", "f1", "accuracy", "pred_flips_per_min",
                  "true_flips_per_min"],
    "table1": ["method", "window", "f1", "accuracy", "abaw2_score"],
    "table4": ["window", "f1", "accuracy", "abaw2_score"],
}
HEADERS = {"f1": "macro-F1", "f1_present": "macro-F1 (classes present)", "abaw2_score": "ABAW2 score",
           "coarse_f1": "coarse F1", "negative_f1": "negative F1", "filled_frames": "filled",
           "pred_flips_per_min": "flips/min (pred.)", "true_flips_per_min": "flips/min (truth)",
           "video_id": "video", "abaw2": "ABAW2 score", "track_id": "track", "face_frames": "frames with face",
           "scored_as": "scored as"}
_HIDDEN = {"system"}  # "coarse[a+b]>negative[c]" strings: the method column already says what each row is


def _shown(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    if name == "overall":  # one wide row reads better as a list of figures
        row = frame.iloc[0] if len(frame) else pd.Series(dtype=float)
        values = [f"{v:,}" if float(v).is_integer() and k in ("frames", "annotated") else _format(float(v))
                  for k, v in row.items()]
        return pd.DataFrame({"figure": [HEADERS.get(k, k.replace("_", " ")) for k in row.index],
                             "value": values})
    columns = [c for c in SHOWN.get(name, frame.columns) if c in frame.columns and c not in _HIDDEN]
    headers = {**HEADERS, "f1": "F1"} if name == "per_class" else HEADERS  # one class: not a macro average
    return frame[columns].rename(columns=lambda c: headers.get(c, c.replace("_", " ")))


def _format(value, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _headline_rows(headline: Mapping) -> list[tuple[str, str]]:
    """(label, value) lines of the summary: the model's figures next to those of predictors that never
    look at a face, on the same frames."""
    ci = f" [95 % CI {_format(headline.get('ci_low'))}, {_format(headline.get('ci_high'))}]" \
        if headline.get("ci_low") is not None else ""
    rows = [
        ("Macro-F1 (8 classes)", f"{_format(headline['f1'])}{ci}"),
        (f"Majority class ({headline['majority_class']} on every frame)", _format(headline["majority_f1"])),
        ("Chance (a uniformly random class)", _format(headline["chance_f1"])),
        ("Accuracy / majority / chance", " / ".join(_format(headline[k]) for k in
                                                    ("accuracy", "majority_accuracy", "chance_accuracy"))),
        ("Annotated frames", f"{headline['annotated']:,}"),
        ("Videos", f"{headline['videos']:,}"),
    ]
    if headline.get("tracks") is not None:
        rows.append(("Face tracks", f"{headline['tracks']:,}"))
    chosen = headline.get("calibration")
    if chosen:
        rows.append(("Calibrated on validation videos", (
            f"window {chosen['window']}, prior correction {'on' if chosen['prior_correction'] else 'off'}"
            + (f", video prior {chosen['video_prior']:g}" if chosen.get("video_prior") else "")
            + (", flip test on" if chosen.get("flip_test") else "")
            + (f", per-video normalisation {chosen['adapt_bn']:g}" if chosen.get("adapt_bn") else "")
            + (", weights " + ", ".join(f"{k} {v:g}" for k, v in sorted(chosen["weights"].items()))
               if chosen.get("weights") else "") + ": "
            f"macro-F1 {_format(chosen.get('validation_f1'))} on {len(chosen.get('validation_videos', []))} "
            f"videos (majority {_format(chosen.get('validation_majority_f1'))}, chance "
            f"{_format(chosen.get('validation_chance_f1'))})")))
    return rows


def _summary_section(summary: Mapping) -> str:
    headline = summary.get("headline")
    if not headline:
        return ""
    cells = "".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
                    for label, value in _headline_rows(headline))
    note = ("<p class=\"note\">The interval resamples whole ground-truth segments (frames of one held "
            "expression are not independent). A model is worth reading only where it clears the majority "
            "and chance rows.</p>")
    return f'<h2>Summary</h2><table class="summary">{cells}</table>{note}'


_STYLE = """body{font-family:sans-serif;margin:2em auto;max-width:1000px;padding:0 1em;font-size:15px}
table{border-collapse:collapse;margin:1em 0;display:block;max-width:100%;overflow-x:auto}
td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}
table.summary th{text-align:left;font-weight:normal}table.summary td{font-weight:bold}
.note{color:#555;font-size:13px}img{max-width:100%}figure{margin:1em 0}"""


def write_report(output: str, summary: Mapping, tables: Mapping[str, pd.DataFrame],
                 timelines: Mapping[str, Mapping[str, np.ndarray]] | None = None, fps: float | None = None) -> str:
    """Write metrics.json, every table, the plots and report.html under `output`; returns the HTML's URI.

    summary: JSON-able numbers; summary["overall"] must hold "confusion_matrix" and "per_class"
    (metrics.frame_metrics); summary["headline"] (optional) the figures the page opens with.
    tables: name -> DataFrame ("table4" gets the window-sweep plot). timelines: video_id -> {series -> labels}.
    """
    storage.write_json(storage.join(output, "metrics.json"), json_ready(summary))
    write_tables(output, tables)
    overall = summary["overall"]
    parts = [f"<h1>fer-ray evaluation</h1><p>{html.escape(str(summary.get('description', '')))}</p>",
             _summary_section(summary)]
    cm = np.asarray(overall["confusion_matrix"])
    parts.append(_figure(_write_plot(output, "confusion_matrix", plots.confusion_matrix_png(cm)), "confusion matrix"))
    f1 = {name: overall["per_class"][name]["f1"] for name in labels.ABAW_CLASSES}
    parts.append(_figure(_write_plot(output, "per_class_f1", plots.per_class_f1_png(f1)), "per-class F1"))
    for name, frame in tables.items():
        parts.append(f"<h2>{html.escape(TITLES.get(name, name))}</h2>{_html_table(_shown(name, frame))}")
        if name == "table4" and len(frame):
            png = plots.window_sweep_png(frame["window"].tolist(), frame["f1"].tolist())
            parts.append(_figure(_write_plot(output, "window_sweep", png), "SP window sweep"))
    if timelines:
        parts.append("<h2>Timelines</h2>")
        for video_id, series in timelines.items():
            png = plots.timeline_png(series, str(video_id), fps)
            parts.append(f"<h3>{html.escape(str(video_id))}</h3>")
            parts.append(_figure(_write_plot(output, f"timeline_{storage.safe_key(video_id)}", png), str(video_id)))
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>fer-ray evaluation</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    uri = storage.join(output, "report.html")
    storage.write_text(uri, page)
    return uri
