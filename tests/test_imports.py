"""The package's shape: no import cycles, Beam only under `beam/`, and the stages only look down.

Each module is importable on its own, and the configuration depends on nothing that depends on it
(a cycle once ran config -> formats -> translation -> config). The folders are the stages of the
data's journey (README, Layout): `read/`, `build/` and `shape/` make rows and must not reach for
what reads them (`report/`, `check/`) or for the runner (`beam/`).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "pipeline"
STAGES = ("read", "build", "shape", "write", "report", "check", "beam")
MAKE_ROWS = ("read", "build", "shape")
LOOK_UP = ("report", "check", "beam")


def _module(path: Path, package: Path = PACKAGE) -> str:
    """`pipeline/build/masking.py` -> `build.masking`; `pipeline/config.py` -> `config`."""
    return ".".join(path.relative_to(package).with_suffix("").parts)


def _imports(path: Path) -> set[str]:
    """Every top-level module name a module imports anywhere, function bodies included, with our own
    package's modules as `stage.module` (or `module` at the top)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] if node.module != "masked_shards" else [f"masked_shards.{a.name}" for a in node.names]
            found |= set(names)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def _graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = {_module(p, package): p for p in package.rglob("*.py") if p.name != "__init__.py" and "assets" not in p.parts}
    graph = {}
    for name, path in modules.items():
        ours = {i.removeprefix("masked_shards.") for i in _imports(path) if i.startswith("masked_shards.")}
        graph[name] = {i for i in ours if i in modules}
    return graph


def test_every_module_lives_in_a_stage_folder_or_is_the_shared_currency():
    loose = sorted(m for m in _graph() if "." not in m)
    assert loose == ["cli", "config", "records"]
    assert {m.split(".")[0] for m in _graph() if "." in m} == set(STAGES)


def test_the_package_has_no_import_cycle():
    graph = _graph()
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", "import cycle: " + " -> ".join([*trail[trail.index(module) :], module])
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            visit(imported, [*trail, module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def _beam_importers(package: Path = PACKAGE) -> list[str]:
    return sorted(
        _module(p, package) for p in package.rglob("*.py") if any(i == "apache_beam" or i.startswith("apache_beam.") for i in _imports(p))
    )


def _looking_up(package: Path = PACKAGE) -> list[str]:
    return sorted(
        f"{module} imports {imported}"
        for module, imported_set in _graph(package).items()
        for imported in imported_set
        if module.split(".")[0] in MAKE_ROWS and imported.split(".")[0] in LOOK_UP
    )


def test_only_the_beam_folder_imports_beam():
    importers = _beam_importers()
    assert importers and all(m.startswith("beam.") for m in importers), importers


def test_the_stages_that_make_rows_only_look_down():
    assert _looking_up() == []


def test_the_layout_rules_see_a_violation(tmp_path):
    """The rules above can fail: a row-making module that imports the runner is caught by both."""
    (tmp_path / "build").mkdir()
    (tmp_path / "beam").mkdir()
    (tmp_path / "build" / "rows.py").write_text("import apache_beam\nfrom masked_shards.beam.job import run\n")
    (tmp_path / "beam" / "job.py").write_text("")
    assert _looking_up(tmp_path) == ["build.rows imports beam.job"]
    assert _beam_importers(tmp_path) == ["build.rows"]
