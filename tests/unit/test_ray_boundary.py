"""Where Ray is spoken: only the adapter (fer_ray/raydata.py) imports Ray Data, and training never imports
the adapter (the train job hands it its datasets). Parsed with `ast`, so imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "fer_ray"
ADAPTER = "fer_ray.raydata"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (`from ray import data` counts as ray.data), and the
    `ray.data` reached as an attribute after `import ray`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ray":
            names.add(f"ray.{node.attr}")
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules() -> dict[str, set[str]]:
    return {str(path.relative_to(PACKAGE.parent)): imported_modules(path) for path in sorted(PACKAGE.rglob("*.py"))}


def _is(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def speakers() -> list[str]:
    """fer_ray modules (dotted names) that use Ray Data."""
    return sorted(path[:-3].replace("/", ".") for path, names in modules().items()
                  if any(_is(n, "ray.data") for n in names))


def test_only_the_adapter_imports_ray_data():
    assert speakers() == [ADAPTER]


def test_training_does_not_import_the_adapter():
    """Training takes the datasets it is given (fer_ray.jobs.train builds them through the adapter)."""
    adapters = set(speakers()) | {ADAPTER}
    offenders = sorted(path for path, names in modules().items()
                       if path.startswith("fer_ray/train/") and any(_is(n, a) for n in names for a in adapters))
    assert offenders == [], offenders


def test_imported_modules_sees_nested_and_from_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import ray\n\ndef f():\n    from ray import data\n    import ray.data.context\n"
                      "    return ray.data.range(3)\n")
    assert {"ray.data", "ray.data.context"} <= imported_modules(source)
    source.write_text("import ray\n\ndef f():\n    return ray.data.range(3)\n")
    assert "ray.data" in imported_modules(source)


def test_data_context_is_scoped():
    """The adapter's Ray Data settings hold inside `data_context` and the previous values come back after,
    also when the block raises."""
    import ray.data

    from fer_ray import raydata

    context = ray.data.DataContext.get_current()
    before = {key: getattr(context, key) for key in raydata.PLAN_SETTINGS}
    assert before != raydata.PLAN_SETTINGS
    with raydata.data_context():
        assert {key: getattr(context, key) for key in raydata.PLAN_SETTINGS} == raydata.PLAN_SETTINGS
    assert {key: getattr(context, key) for key in raydata.PLAN_SETTINGS} == before
    saved = context.use_datasource_v2
    try:
        with raydata.data_context({"use_datasource_v2": not saved}):
            assert context.use_datasource_v2 is (not saved)
            raise RuntimeError("inside")
    except RuntimeError:
        pass
    assert context.use_datasource_v2 is saved
