"""Imports only point down the layers: low-level modules, the stages (preprocess, infer, train), evaluate and
render, the Ray Data adapter, the jobs, the API.

Every module under fer_ray/ is parsed (no import runs), and every import counts, also one inside a function:
a function-local import is still a dependency, only a later one. Imports through importlib strings are not
seen. Rules about which modules may speak Ray Data are not checked here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "fer_ray"
LOW_LEVEL = ("codec", "config", "faces", "inputs", "labels", "models", "plan", "runtime", "safe_load", "schema",
             "shards", "storage", "video")
STAGES = ("preprocess", "infer", "train")  # what runs inside Ray tasks and actors; independent of each other
TOP = ("evaluate", "render", "raydata", "jobs", "api")

# layer -> layers it must not import. From the bottom: low-level modules, the stage layers, evaluate and
# render (they read inference's outputs), the Ray Data adapter (generic: it runs whatever steps it is given),
# the jobs that wire stages into plans, and the Python API on top.
FORBIDDEN = {
    **{low: STAGES + TOP for low in LOW_LEVEL},
    **{stage: tuple(s for s in STAGES if s != stage) + TOP for stage in STAGES},
    "evaluate": ("preprocess", "train", "raydata", "jobs", "api"),
    "render": ("preprocess", "train", "raydata", "jobs", "api"),
    "raydata": STAGES + ("evaluate", "render", "jobs", "api"),
    "jobs": ("api",),
    "api": (),  # the top: it may use every layer below
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """The modules that import statements anywhere in `source` (of `module`) name.

    `from a.b import c` names a.b; `from fer_ray import c` names fer_ray.c (c is a layer there)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                package = module.split(".")[: len(module.split(".")) - node.level + int(is_package)]
                base = ".".join(package + ([base] if base else []))
            if layer_of(base):
                names.add(base)
            else:
                names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def layer_of(dotted: str) -> str | None:
    """"fer_ray.infer.cascade" -> "infer"; "fer_ray.schema" -> "schema"; None outside fer_ray."""
    parts = dotted.split(".")
    return parts[1] if parts[0] == "fer_ray" and len(parts) > 1 else None


def offending_imports() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        forbidden = FORBIDDEN.get(layer_of(module) or "", ())
        imported = imported_names(path.read_text(), module, path.name == "__init__.py")
        found += sorted({f"{module} -> {name}" for name in imported if layer_of(name) in forbidden})
    return found


def test_layers_only_point_down():
    offenders = offending_imports()
    assert not offenders, "imports that run back up the layers:\n" + "\n".join(offenders)


def test_every_layer_named_in_the_rules_exists():
    for layer in {*FORBIDDEN, *(name for names in FORBIDDEN.values() for name in names)}:
        assert (PACKAGE / layer).is_dir() or (PACKAGE / f"{layer}.py").is_file(), layer


def test_every_module_has_a_layer():
    """A new module must be placed in the rules above, so its imports are checked too."""
    names = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"} | \
        {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert names <= set(FORBIDDEN), sorted(names - set(FORBIDDEN))


def test_imports_are_found_at_any_depth():
    source = (
        "import fer_ray.schema\n"
        "from fer_ray import evaluate\n"
        "def f():\n"
        "    if True:\n"
        "        from fer_ray.train.augment import eval_transform\n"
        "class A:\n"
        "    def g(self):\n"
        "        from . import cascade\n"
        "        from ..models import registry\n"
    )
    names = imported_names(source, "fer_ray.infer.logits")
    assert names == {"fer_ray.schema", "fer_ray.evaluate", "fer_ray.train.augment", "fer_ray.infer",
                     "fer_ray.models"}


def test_architecture_page_names_modules_that_exist():
    """ARCHITECTURE.md is the newcomer's map: every module path it names must be there."""
    import re

    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:fer_ray/)?[a-z_]+(?:/[a-z_{},]+)*(?:\.py|/))`", text))
    missing = []
    for name in named:
        path = name if name.startswith("fer_ray/") else f"fer_ray/{name}"
        for expanded in _braces(path):
            if not (PACKAGE.parent / expanded).exists() and not (PACKAGE.parent / name).exists():
                missing.append(name)
    assert named and not missing, sorted(set(missing))


def _braces(path: str) -> list[str]:
    """"jobs/{a,b}.py" -> ["jobs/a.py", "jobs/b.py"]."""
    import re

    match = re.search(r"\{([^}]*)\}", path)
    if not match:
        return [path]
    return [path[:match.start()] + part + path[match.end():] for part in match.group(1).split(",")]
