"""The package layout is the architecture (README "How the code is laid out"), checked on every
module's imports, parsed with ast (module level and inside functions alike):

- the inference path (segzoo.io, segzoo.predict, segzoo.runtime, segzoo.zoo, segzoo.slides and
  the foundation modules config, errors, provenance) never imports Keras, TensorFlow, tf2onnx
  or segzoo's training, export, evaluation or Keras-model code (segzoo.models); the exceptions:
  segzoo.runtime.keras, the Keras runtime, imports Keras and segzoo.models inside its functions,
  and the zoo reads the architecture names from segzoo.models.architectures, whose registry
  imports no Keras;
- segzoo.predict never imports a runtime, the zoo or the whole-slide package (above it);
- segzoo.slides by role, imported only downward: options < readers < plan < results < run;
  dask and distributed only in segzoo.slides.run.cluster and .worker;
- no circle between packages (segzoo's subpackages and segzoo.slides' subpackages);
- nothing below the zoo (foundation, io, predict, runtime, models, datasets) imports it;
- segzoo.io imports no other segzoo package (every layer may use it);
- nothing but segzoo.cli imports segzoo.cli;
- only segzoo.napari (the napari plugin) imports napari, a Qt binding or magicgui, and nothing imports it;
- no module is longer than 400 lines, and none is named utils, misc or helpers.

And a TensorFlow-free process loads a zoo model and predicts.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segzoo"
MAX_LINES = 400
FOUNDATION = ("segzoo.config", "segzoo.errors", "segzoo.provenance")
INFERENCE_PATH = ("segzoo.io", "segzoo.predict", "segzoo.runtime", "segzoo.zoo", "segzoo.slides", *FOUNDATION)
HEAVY = ("keras", "tensorflow", "tf2onnx", "tf_keras")
NOT_FOR_INFERENCE = ("segzoo.training", "segzoo.export", "segzoo.evaluation", "segzoo.models", "segzoo.cli")
BELOW_ZOO = (*FOUNDATION, "segzoo.io", "segzoo.predict", "segzoo.runtime", "segzoo.models", "segzoo.datasets")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. segzoo.zoo.loading
    target: str  # what it imports, e.g. segzoo.predict.predictor or keras.ops
    line: int
    lazy: bool  # inside a function

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}{' (in a function)' if self.lazy else ''}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> list[Import]:
    module = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(module, alias.name, child.lineno, lazy) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolve against this module's package
                    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    base = ".".join(package[:len(package) - child.level + 1] + ([base] if base else []))
                for alias in child.names:  # `from segzoo.zoo import hub` imports the module segzoo.zoo.hub
                    full = f"{base}.{alias.name}"
                    found.append(Import(module, full if _is_module(full) else base, child.lineno, lazy))
            visit(child, inner)

    visit(tree, False)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))
IMPORTS = [imp for path in MODULES for imp in _imports(path)]


def _in(name: str, packages) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_parser_sees_every_kind_of_import():
    """The checks below are only as good as the import list: it holds module-level, function-level
    and from-imports of submodules (segzoo.zoo.sources: `from segzoo.zoo import hub, registry`)."""
    by_module = {}
    for imp in IMPORTS:
        by_module.setdefault(imp.module, set()).add((imp.target, imp.lazy))
    assert ("segzoo.zoo.hub", False) in by_module["segzoo.zoo.sources"]
    assert ("keras", True) in by_module["segzoo.runtime.keras"]
    assert ("segzoo.models.folders", True) in by_module["segzoo.runtime.keras"]
    assert ("segzoo.predict.tiling", False) in by_module["segzoo.predict.predictor"]
    assert len(MODULES) > 60


def test_the_inference_path_imports_no_keras_tensorflow_or_training_code():
    allowed = {  # the Keras runtime loads Keras model folders, inside its functions only
        ("segzoo.runtime.keras", "keras", True), ("segzoo.runtime.keras", "segzoo.models.folders", True)}
    bad = [str(imp) for imp in IMPORTS
           if _in(imp.module, INFERENCE_PATH) and (_in(imp.target, HEAVY) or _in(imp.target, NOT_FOR_INFERENCE))
           and (imp.module, imp.target, imp.lazy) not in allowed
           and not (imp.target == "segzoo.models.architectures" and not imp.lazy)]  # the name registry
    assert not bad, "\n".join(bad)


def test_the_architecture_registry_the_zoo_reads_imports_no_keras():
    """segzoo.zoo reads architecture names from segzoo.models.architectures (and imports
    segzoo.models with it): both must stay Keras-free at any depth of their own code."""
    for module in ("segzoo.models", "segzoo.models.architectures"):
        imports = [imp for imp in IMPORTS if imp.module == module]
        bad = [str(imp) for imp in imports if _in(imp.target, HEAVY)
               or (imp.target.startswith("segzoo.") and not _in(imp.target, ("segzoo.errors",)))]
        assert not bad, "\n".join(bad)


def test_the_predictor_is_handed_its_runtime():
    bad = [str(imp) for imp in IMPORTS if _in(imp.module, ("segzoo.predict",))
           and _in(imp.target, ("segzoo.runtime", "segzoo.zoo"))]
    assert not bad, "\n".join(bad)


def test_the_predictor_never_reaches_up_to_the_slides():
    up = [str(imp) for imp in IMPORTS if _in(imp.module, ("segzoo.predict",)) and _in(imp.target, ("segzoo.slides",))]
    assert not up, "\n".join(up)


SLIDE_LAYERS = ("segzoo.slides.options", "segzoo.slides.readers", "segzoo.slides.plan", "segzoo.slides.results",
                "segzoo.slides.run")


def _layer(name: str) -> int | None:
    return next((i for i, layer in enumerate(SLIDE_LAYERS) if _in(name, (layer,))), None)


def test_slides_is_laid_out_by_role_and_imports_only_downward():
    modules = {_module_name(p) for p in MODULES if _in(_module_name(p), ("segzoo.slides",))}
    outside = sorted(m for m in modules if m != "segzoo.slides" and _layer(m) is None)
    assert not outside, f"every slides module belongs to one of {SLIDE_LAYERS}: {outside}"
    up = [str(imp) for imp in IMPORTS if _layer(imp.module) is not None and _layer(imp.target) is not None
          and _layer(imp.target) > _layer(imp.module)]
    assert not up, "\n".join(up)
    dask = {imp.module for imp in IMPORTS if _in(imp.target, ("dask", "distributed")) and _in(imp.module, ("segzoo",))}
    assert dask <= {"segzoo.slides.run.cluster", "segzoo.slides.run.worker"}, dask


def _package(name: str) -> str | None:
    """The package a module belongs to for the no-circle rule: segzoo.slides.X, or segzoo.X."""
    parts = name.split(".")
    if parts[0] != "segzoo" or len(parts) < 2:
        return None  # segzoo itself (its __init__: the version, lazy entry points) and third parties
    if parts[1] == "slides" and len(parts) > 2:
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def test_no_circle_between_packages():
    """Imports between packages (module level and in functions) form no cycle."""
    edges: dict[str, set[str]] = {}
    for imp in IMPORTS:
        a, b = _package(imp.module), _package(imp.target)
        if a and b and a != b and not (b == "segzoo.slides" or a == "segzoo.slides"):
            edges.setdefault(a, set()).add(b)

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [" -> ".join(c) for start in sorted(edges) if (c := cycle_from(start))]
    assert not cycles, "\n".join(cycles)


def test_nothing_below_the_zoo_imports_it():
    bad = [str(imp) for imp in IMPORTS if _in(imp.module, BELOW_ZOO) and _in(imp.target, ("segzoo.zoo",))]
    assert not bad, "\n".join(bad)


def test_io_imports_no_other_segzoo_package():
    bad = [str(imp) for imp in IMPORTS if _in(imp.module, ("segzoo.io",)) and imp.target.startswith("segzoo")
           and not _in(imp.target, ("segzoo.io", "segzoo.errors")) and imp.target != "segzoo"]
    assert not bad, "\n".join(bad)


def test_only_the_cli_imports_the_cli():
    bad = [str(imp) for imp in IMPORTS if _in(imp.target, ("segzoo.cli",)) and not _in(imp.module, ("segzoo.cli",))]
    assert not bad, "\n".join(bad)


GUI = ("napari", "qtpy", "magicgui", "superqt", "vispy", "npe2", "PyQt5", "PyQt6", "PySide2", "PySide6")


def test_only_the_napari_plugin_imports_napari_or_qt():
    """segzoo without the napari extra never needs napari or Qt: only segzoo.napari imports them (or
    magicgui), and no other module imports segzoo.napari."""
    bad = [str(imp) for imp in IMPORTS if not _in(imp.module, ("segzoo.napari",))
           and (_in(imp.target, GUI) or _in(imp.target, ("segzoo.napari",)))]
    assert not bad, "\n".join(bad)
    assert any(_in(imp.target, ("napari",)) for imp in IMPORTS if _in(imp.module, ("segzoo.napari",)))


def test_no_module_is_longer_than_400_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in MODULES
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split by role: {long}"


def test_no_module_is_named_for_no_role():
    vague = {"utils", "util", "misc", "helpers", "helper", "common"}
    bad = [str(p.relative_to(PACKAGE.parent)) for p in MODULES
           if p.stem in vague or any(part in vague for part in p.relative_to(PACKAGE).parts[:-1])]
    assert not bad, bad


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_a_zoo_model_predicts_with_tensorflow_and_keras_unimportable(tmp_path, precision):
    """The base install's promise, in a process where importing TensorFlow, Keras or tf2onnx
    raises ImportError: load a zoo model offline (the bundled copy, an empty Hub cache) and
    predict the sample image; no training, export or Keras-model module gets imported."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules.update(dict.fromkeys(["tensorflow", "keras", "tf_keras", "tf2onnx"]))
        import segzoo
        from segzoo.io.images import sample_image_path
        predictor = segzoo.load("unet-monuseg", precision={precision!r})
        result = predictor.predict(sample_image_path())
        loaded = sorted(m for m in sys.modules if sys.modules[m] is not None and m.split(".")[0] in
                        ("tensorflow", "keras", "tf_keras", "tf2onnx"))
        segzoo_loaded = sorted(m for m in sys.modules if m.startswith(("segzoo.training", "segzoo.export",
                               "segzoo.evaluation", "segzoo.models.folders", "segzoo.cli")))
        print("RUNTIME", predictor.runtime, "NUCLEI", result.num_nuclei, "LOADED", loaded, segzoo_loaded)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("RUNTIME onnx NUCLEI ") and line.endswith("LOADED [] []"), line
    assert int(line.split()[3]) > 50
