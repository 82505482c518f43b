"""Table and folder names are spelled once, in fer_ray.schema; the older module-level names are aliases."""

from __future__ import annotations

import ast
from pathlib import Path

from fer_ray import preprocess, render, schema, shards
from fer_ray.infer import postprocess, systems
from fer_ray.jobs import annotate

PACKAGE = Path(__file__).resolve().parents[2] / "fer_ray"
NAMES = {schema.FACES_TABLE, schema.LOGITS_TABLE, schema.PREDICTIONS_TABLE, schema.FAILURES_DIR,
         schema.SUBMISSION_DIR, schema.DONE_DIR, schema.MODELS_INDEX}


def test_old_names_are_the_schema_constants():
    assert preprocess.FACES == annotate.FACES == render.FACES_TABLE == schema.FACES_TABLE
    assert postprocess.PREDICTIONS == schema.PREDICTIONS_TABLE
    assert postprocess.LOGITS == schema.LOGITS_TABLE
    assert postprocess.SUBMISSION == schema.SUBMISSION_DIR
    assert shards.DONE_DIR == schema.DONE_DIR and shards.FAILURES == schema.FAILURES_DIR
    assert systems.INDEX_FILE == schema.MODELS_INDEX


def _literal_paths(tree: ast.AST) -> list[str]:
    """Table names given as string literals to shards.* or storage.join (where a path is built)."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id in ("shards", "storage")):
            continue
        for arg in node.args:
            if isinstance(arg, ast.Constant) and arg.value in NAMES:
                found.append(f"line {node.lineno}: {node.func.value.id}.{node.func.attr}(..., {arg.value!r})")
    return found


def test_no_module_spells_a_table_name():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        offenders += [f"fer_ray/{relative} {hit}" for hit in _literal_paths(ast.parse(path.read_text()))]
    assert not offenders, "use the fer_ray.schema constants:\n" + "\n".join(offenders)


def test_the_scan_sees_literals():
    source = 'shards.sweep(out, "faces")\nstorage.join(out, "submission", key)\nstorage.join(out, "other")\n'
    assert len(_literal_paths(ast.parse(source))) == 2
