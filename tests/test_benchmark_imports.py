"""Benchmarks are not run by the test suite (they take minutes to hours), so a refactor can break
them silently: every name a benchmark imports from the platform's packages, at module level or
inside a function, must still exist."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("warehouse", "sfreward", "annotation", "pipelines")
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))


def _platform_imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every import of a platform module in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] in PACKAGES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in PACKAGES:
            out += [(node.module, a.name, node.lineno) for a in node.names]
    return out


def test_benchmarks_are_found():
    assert any(p.name == "bench_scale.py" for p in BENCHMARKS), BENCHMARKS


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_every_platform_name_a_benchmark_imports_exists(path: Path):
    missing = []
    for module, name, line in _platform_imports(path):
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"line {line}: import {module}: {e}")
            continue
        if name is None or hasattr(mod, name):
            continue
        try:   # `from package import submodule`
            importlib.import_module(f"{module}.{name}")
        except ImportError:
            missing.append(f"line {line}: {module} has no {name!r}")
    assert not missing, f"{path.relative_to(ROOT)}:\n" + "\n".join(missing)
