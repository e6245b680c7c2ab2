"""The package layout: imports point one way, the top level stays small, config sections are typed,
and docs/architecture.md names exactly the packages and modules that exist."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

from tests.helpers.paths import REPO

SRC = REPO / "src" / "mergepipe"
# Lower number = lower layer. A module may import its own layer or a lower one.
LAYERS = {
    "errors": 0, "__init__": 0,
    "config": 1,
    "core": 2,
    "merge": 3, "evaluate": 3, "results": 3, "publish": 3, "zoo": 3,
    "pipeline": 4, "search": 4,
    "commands": 5, "cli": 5, "__main__": 5,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(["mergepipe", *parts])] = path
    return out


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return LAYERS[top]


def _imports(path: Path, module: str) -> set[str]:
    """Every mergepipe module imported anywhere in the file (also inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mergepipe")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            if base.startswith("mergepipe"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    modules = _modules()
    return {m for m in found if m in modules}


def test_no_module_imports_a_higher_layer() -> None:
    wrong = []
    for module, path in _modules().items():
        mine = _layer(module)
        for imported in _imports(path, module):
            if _layer(imported) > mine:
                wrong.append(f"{module} (layer {mine}) imports {imported} (layer {_layer(imported)})")
    assert not wrong, "\n".join(wrong)


def test_layer_check_sees_lazy_imports(tmp_path: Path) -> None:
    # The checker itself must find imports inside functions, or it would pass on anything.
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from mergepipe.pipeline import run_pipeline\n")
    assert "mergepipe.pipeline" in _imports(path, "mergepipe.core.x")


def test_top_level_is_small() -> None:
    top = [p.name for p in SRC.glob("*.py")]
    assert len(top) <= 8, top


def test_config_sections_are_typed_models() -> None:
    from pydantic import BaseModel

    from mergepipe.config import PipelineConfig

    for name in ("merge", "outputs", "evaluate", "holmes", "hub"):
        annotation = PipelineConfig.model_fields[name].annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel), (name, annotation)
    loose = [name for name, f in PipelineConfig.model_fields.items()
             if typing.get_origin(f.annotation) is dict and typing.get_args(f.annotation)[1] is typing.Any]
    assert not loose, loose


def test_no_getattr_with_default_on_config_objects() -> None:
    config_names = re.compile(r"^(config|section|settings|hub|holmes|evaluate|merge|outputs|v)$")
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and len(node.args) == 3:
                target = node.args[0]
                while isinstance(target, ast.Attribute):
                    target = target.value
                if isinstance(target, ast.Name) and config_names.match(target.id):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, found


def test_architecture_doc_names_every_module() -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    # One line per module: "- `merge/plan.py` — what it does".
    named = set(re.findall(r"^- `([a-z_]+(?:/[a-z_]+)*\.py)` — ", text, re.M))
    actual = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
              if not (p.name == "__init__.py" and p.parent != SRC and p.parent.name not in ("methods", "zoo"))}
    # Package __init__ files are named only where they hold code (merge/methods, zoo).
    assert actual - named == set(), f"not in docs/architecture.md: {sorted(actual - named)}"
    assert named - actual == set(), f"named but missing: {sorted(named - actual)}"
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    for package in packages:
        assert f"`{package}/`" in text, f"package {package}/ is not explained"
