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
    return frame.to_html(index=False, escape=True, na_rep="", float_format=lambda v: f"{v:.4f}", border=0)


def _write_plot(output: str, name: str, png: bytes) -> str:
    """Write one PNG; returns its path relative to report.html."""
    relative = f"{PLOTS_DIR}/{name}.png"
    storage.write_bytes(storage.join(output, relative), png)
    return relative


def _figure(src: str, alt: str) -> str:
    return f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}"></figure>'


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}
td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}"""


def write_report(output: str, summary: Mapping, tables: Mapping[str, pd.DataFrame],
                 timelines: Mapping[str, Mapping[str, np.ndarray]] | None = None, fps: float | None = None) -> str:
    """Write metrics.json, every table, the plots and report.html under `output`; returns the HTML's URI.

    summary: JSON-able numbers; summary["overall"] must hold "confusion_matrix" and "per_class"
    (metrics.frame_metrics). tables: name -> DataFrame ("table4" gets the window-sweep plot).
    timelines: video_id -> {series name -> label per frame}.
    """
    storage.write_json(storage.join(output, "metrics.json"), json_ready(summary))
    write_tables(output, tables)
    overall = summary["overall"]
    parts = [f"<h1>fer-ray evaluation</h1><p>{html.escape(str(summary.get('description', '')))}</p>",
             "<h2>Overall</h2>", _html_table(tables["overall"]) if "overall" in tables else ""]
    cm = np.asarray(overall["confusion_matrix"])
    parts.append(_figure(_write_plot(output, "confusion_matrix", plots.confusion_matrix_png(cm)), "confusion matrix"))
    f1 = {name: overall["per_class"][name]["f1"] for name in labels.ABAW_CLASSES}
    parts.append(_figure(_write_plot(output, "per_class_f1", plots.per_class_f1_png(f1)), "per-class F1"))
    for name, frame in tables.items():
        if name == "overall":
            continue
        parts.append(f"<h2>{html.escape(name)}</h2>{_html_table(frame)}")
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
