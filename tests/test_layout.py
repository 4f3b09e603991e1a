"""The package layout follows the data flow: each step imports only the steps before it (and the
shared modules), so a newcomer can read the pipeline top to bottom and no cycle can form."""
from __future__ import annotations

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"
BASE = {"storage", "constants", "numerics"}
#: the steps each step may import besides itself
ALLOWED = {
    "storage": set(), "constants": set(), "numerics": set(), "ray_utils": set(),
    "checkpoint": {"storage"},
    "graph": {"checkpoint", "storage"},
    "symmetry": {"graph", "numerics"},
    "testing": {"graph", "symmetry"},
    "zoo": BASE | {"checkpoint", "graph", "symmetry"},
    "ingest": BASE | {"checkpoint", "graph"},
    "encoders": BASE | {"checkpoint", "graph", "symmetry"},
    "training": BASE | {"graph", "symmetry", "encoders", "ingest", "evaluation", "zoo"},
    "search": BASE | {"checkpoint", "graph", "symmetry", "encoders", "ingest"},
    "evaluation": BASE | {"graph", "symmetry", "encoders", "ingest", "zoo"},
    "rebasin": BASE | {"checkpoint", "graph", "symmetry", "evaluation", "zoo"},
    "autoencoder": BASE | {"checkpoint", "graph", "symmetry", "encoders", "ingest", "training", "evaluation",
                           "rebasin", "zoo"},
    "lineage": BASE | {"checkpoint", "graph", "symmetry", "rebasin", "search"},
}
#: the commands (the jobs' code) and the command line sit on top: they may import every step
ALLOWED["commands"] = set(ALLOWED) | {"ray_utils"}
ALLOWED["cli"] = set()


def _imports(path: Path) -> set[str]:
    """The ``pipeline`` steps a module imports (first component after ``pipeline.``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        for name in names:
            if name == "pipeline" and isinstance(node, ast.ImportFrom):
                found.update(a.name for a in node.names)
            elif name.startswith("pipeline."):
                found.add(name.split(".")[1])
    return found


def test_steps_import_only_earlier_steps():
    violations = []
    for path in sorted(PIPELINE.rglob("*.py")):
        relative = path.relative_to(PIPELINE)
        step = relative.parts[0].removesuffix(".py")
        if step != "__init__":
            violations += [f"{relative} imports pipeline.{name}"
                           for name in _imports(path) - ALLOWED[step] - {step}]
    assert not violations, "\n".join(violations)


def test_the_check_sees_a_violation(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from pipeline.training.trainer import TrainConfig\nimport pipeline.search.index\n")
    assert _imports(module) == {"training", "search"}
