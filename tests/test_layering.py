"""The import rules of docs/architecture.md ("Layers"), read from the source: packages never
import upward, and no module cycle runs through `sfreward.train` and `sfreward.evaluate`."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["warehouse", "sfreward", "annotation", "pipelines"]   # each may import only those before it


def _imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in a file (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names



def test_packages_never_import_upward():
    upward = []
    for rank, pkg in enumerate(LAYERS):
        above = LAYERS[rank + 1:]
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for name in _imports(path):
                if name.split(".")[0] in above:
                    upward.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not upward, "\n".join(upward)


def test_train_and_evaluate_do_not_import_each_other_in_a_cycle():
    evaluate = _imports(ROOT / "sfreward" / "evaluate.py")
    assert not [n for n in evaluate if n == "sfreward.train" or n.startswith("sfreward.train.")], evaluate
    data = _imports(ROOT / "sfreward" / "data.py")
    assert not [n for n in data if n.startswith(("sfreward.train", "sfreward.evaluate"))], data


def test_the_reward_scale_has_one_name():
    """warehouse/scale.py is the only home of the scale constants: nobody renames them on import
    (the old `SCALE` aliases) or defines a module constant of their value."""
    from warehouse import scale

    values = {scale.REWARD_MAX, float(scale.STARS_MAX)}
    found = []
    for pkg in LAYERS:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path == ROOT / "warehouse" / "scale.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.ImportFrom) and node.module == "warehouse.scale":
                    found += [f"{path.relative_to(ROOT)}: {a.name} as {a.asname}" for a in node.names if a.asname and a.name.isupper()]
            for node in ast.parse(path.read_text()).body:   # module-level constants
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                        and isinstance(node.value.value, (int, float)) and not isinstance(node.value.value, bool) \
                        and float(node.value.value) in values and all(isinstance(t, ast.Name) for t in node.targets) \
                        and any(t.id.isupper() and ("SCORE" in t.id or "SCALE" in t.id or "REWARD" in t.id
                                                    or "STAR" in t.id) for t in node.targets):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)


def test_pipelines_hold_no_sql():
    """The Dagster defs, the CLI and the report call named functions of the package that owns
    the tables (docs/architecture.md, "Warehouse access"); no SQL text lives in pipelines/."""
    import re

    # upper case, as all SQL here is written: "select a model" in a help text is not SQL
    sql = re.compile(r"\b(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(OR\s+REPLACE\s+)?"
                     r"(TEMP\s+)?TABLE)\s")
    found = []
    for path in sorted((ROOT / "pipelines").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and sql.search(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:60]!r}")
    assert not found, "\n".join(found)
