"""The shape of the code: layers that only import downwards, no import cycles, one home per constant.

The layers are import-linter contracts in pyproject.toml (`nox -s lint` runs them too); these tests
run the same tool, and show that it really fails on an upward import.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from dogbooth.core import model
from dogbooth.core.paths import REPO_ROOT
from services import schemas

PACKAGES = ("dogbooth", "services", "training", "loadtest")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# Third-party modules a function may import on first use, and why it is not imported at the top.
HEAVY = {
    "torch": "seconds to import; only model and training code needs it",
    "diffusers": "imports torch",
    "transformers": "imports torch",
    "peft": "imports torch; training only",
    "accelerate": "imports torch; training only",
    "bitsandbytes": "optional 8-bit Adam, often absent",
    "safetensors": "imports torch tensors; LoRA export only",
    "huggingface_hub": "Hub upload only",
    "tqdm": "training progress only",
    "numpy": "scoring only; keeps the CLI's start fast",
    "PIL": "scoring only",
    "matplotlib": "load-test charts only, slow to import",
    "kubernetes": "optional extra `cluster`; slow to import",
    "kubernetes_validate": "test extra; render validation only",
    "pyhelm3": "optional extra `cluster`",
    "helm_python": "test extra; the Helm engine, loads a shared library",
    "jsonschema": "schema checks only",
    "schemathesis": "reliability fuzzing only; slow to import",
    "hypothesis": "reliability fuzzing only",
    "aiohttp": "bench and reliability load only; ~100 ms at CLI start",
}
# Project imports inside a function, each deliberate. Nothing else may hide one.
DELIBERATE = {
    ("services/entry.py", "services"): "re-imports the serve code from disk on every build (the hot reload)",
}


def _project_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO_ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def _function_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    found += [(node.lineno, a.name) for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.append((node.lineno, node.module))
    return found


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_layer_contracts_hold() -> None:
    result = _lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    for pkg in PACKAGES:
        shutil.copytree(REPO_ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    errors = tmp_path / "dogbooth" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom dogbooth.platforms import local  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "dogbooth.core is not allowed to import dogbooth.platforms" in result.stdout
    assert "dogbooth.core.errors -> dogbooth.platforms.local" in result.stdout


def test_the_replica_may_not_import_the_cli(tmp_path: Path) -> None:
    for pkg in PACKAGES:
        shutil.copytree(REPO_ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    batcher = tmp_path / "services" / "batcher.py"
    batcher.write_text(batcher.read_text() + "\nfrom dogbooth.core import names  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "services.batcher -> dogbooth.core.names" in result.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), function-level imports included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycles() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert _cycles(graph) == []


def test_a_cycle_is_found() -> None:
    graph = grimp.ImportGraph()
    for a, b in (("x.a", "x.b"), ("x.b", "x.c"), ("x.c", "x.a"), ("x.c", "x.d")):
        graph.add_import(importer=a, imported=b)
    assert _cycles(graph) == [["x.a", "x.b", "x.c"]]


def test_imports_inside_functions_are_only_heavy_dependencies() -> None:
    hidden = []
    for path in _project_files():
        rel = path.relative_to(REPO_ROOT).as_posix()
        for line, module in _function_imports(path):
            top = module.split(".")[0]
            if top not in HEAVY and (rel, top) not in DELIBERATE:
                hidden.append(f"{rel}:{line}: import {module}")
    assert hidden == []


def test_the_top_level_of_dogbooth_stays_small_and_each_layer_says_what_it_may_import() -> None:
    modules = sorted(p.name for p in (REPO_ROOT / "dogbooth").glob("*.py"))
    assert len(modules) <= 8, modules
    for layer in ("core", "settings", "render", "platforms", "commands"):
        doc = ast.get_docstring(ast.parse((REPO_ROOT / "dogbooth" / layer / "__init__.py").read_text()))
        assert doc, f"dogbooth/{layer}/__init__.py has no docstring"
        assert "import" in doc, f"dogbooth/{layer}/__init__.py does not say what it may import"


def test_the_replicas_strict_base_is_the_same_as_dogbooths() -> None:
    assert schemas._Strict.model_config == model.STRICT


@pytest.mark.parametrize(
    "literal",
    ['"kuberay-system"', '"dogbooth-model"', '"Imagine"', "8265", "_Strict(BaseModel)", "_DNS_LABEL ="],
)
def test_each_shared_literal_has_one_home(literal: str) -> None:
    homes = [
        path.relative_to(REPO_ROOT).as_posix()
        for path in _project_files()
        if literal in path.read_text() and not path.name.startswith("test_")
    ]
    assert len(homes) <= 1, f"{literal} is written in {homes}"
