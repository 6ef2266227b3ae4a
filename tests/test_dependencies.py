"""Every third-party package the code uses at run time is a declared dependency of pyproject.toml."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"forecast", "inference", "pipelines"}

#: Packages used through another library's call rather than imported by name.
USED_THROUGH = {
    "scipy": "xarray's interp (forecast/regrid.py: grids without poles, such as WeatherBench2's)"
}


#: Modules that ship inside a declared distribution's own dependency (its public API).
PART_OF = {"pydantic_core": "pydantic"}


def _names(requirements: list[str]) -> set[str]:
    """Distribution names of requirements, with the extras they name (``dask[distributed]``)."""
    names = set()
    for item in requirements:
        match = re.match(r"([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?", item)
        assert match, item
        names.add(match.group(1).lower().replace("_", "-"))
        names.update(
            extra.strip().lower() for extra in (match.group(2) or "").split(",") if extra.strip()
        )
    return names


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = {
        name
        for group, items in project["optional-dependencies"].items()
        if group != "dev"
        for name in _names(items)
    }
    return _names(project["dependencies"]), extras


def _imported_modules() -> dict[str, str]:
    found: dict[str, str] = {}
    for package in sorted(FIRST_PARTY):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in FIRST_PARTY and top not in sys.stdlib_module_names:
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_packages_used_through_other_libraries_are_declared():
    required, _ = _declared()
    missing = {name: why for name, why in USED_THROUGH.items() if name not in required}
    assert not missing, missing


def test_every_imported_package_is_declared():
    required, extras = _declared()
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, where in _imported_modules().items():
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        names.add(PART_OF.get(module, module))
        if not names & (required | extras):
            undeclared[module] = where
    assert not undeclared, undeclared


def test_the_ingest_and_the_scoring_do_not_import_torch() -> None:
    """An ingest on its own grid, its Dask workers and the scoring need no torch: importing it costs
    seconds and ~600 MB of memory in every process (forecast.grid and forecast.regrid import
    torch-harmonics where they resample)."""
    import subprocess

    code = (
        "import sys; import pipelines.ingest, pipelines.graph, forecast.scoring; "
        "print(sorted(m for m in ('torch', 'torch_harmonics') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
