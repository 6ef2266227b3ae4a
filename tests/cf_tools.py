"""Run the field's tools on a file: the two CF checkers, Iris, CDO and NCO (test helpers).

Each runs in a subprocess: Iris and cartopy load pyproj, and loading it after
netCDF4 in one process aborts the interpreter at exit with these wheels.

- :func:`compliance_errors`: the IOOS ``compliance-checker`` at a CF version
  (it ships the CF standard-name table and runs offline): the messages of
  its high-priority (error) checks that failed.
- :func:`cfchecks_errors`: ``cfchecks`` (PyPI ``cfchecker``), with the
  UDUNITS-2 library and database that the ``cf-units`` wheel bundles
  (``cfunits`` looks the library up by name, so the lookup is pointed at the
  bundled copy), the compliance-checker's standard-name table, and empty
  area-type and region tables (the files use neither), so it runs offline.
- :func:`iris_cubes`: what Iris makes of a file, as JSON.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

CFCHECKS = r"""
import ctypes.util, glob, json, os, pathlib, sys
import cf_units, compliance_checker, netCDF4
base = pathlib.Path(cf_units.__file__).parent
library = glob.glob(str(base.parent / "cf_units.libs" / "libudunits2*.so*"))
os.environ["UDUNITS2_XML_PATH"] = str(base / "etc" / "share" / "udunits2.xml")
find = ctypes.util.find_library
if library:
    ctypes.util.find_library = lambda name: library[0] if name == "udunits2" else find(name)
table = pathlib.Path(compliance_checker.__file__).parent / "data" / "cf-standard-name-table.xml"
empty = pathlib.Path(sys.argv[2])
empty.write_text("<table><version_number>0</version_number><date>none</date></table>")
from cfchecker.cfchecks import CFChecker, CFVersion, FatalCheckerError
with netCDF4.Dataset(sys.argv[1]) as nc:
    declared = getattr(nc, "Conventions", "")
if declared.startswith("CF-"):
    version = CFVersion(tuple(int(x) for x in declared.removeprefix("CF-").split(".")))
else:  # no CF version declared: check at the newest the checker knows
    version = CFVersion((1, 8))
checker = CFChecker(cfStandardNamesXML=str(table), cfAreaTypesXML=str(empty),
                    cfRegionNamesXML=str(empty), silent=True, version=version)
try:
    checker.checker(sys.argv[1])
except FatalCheckerError:
    pass
results = checker.all_results[sys.argv[1]]
messages = {"version": declared, "ERROR": [], "WARN": []}
for scope in [results["global"], *results["variables"].values()]:
    messages["ERROR"].extend(scope.get("FATAL", []) + scope.get("ERROR", []))
    messages["WARN"].extend(scope.get("WARN", []))
print(json.dumps(messages))
"""

IRIS = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import iris
cubes = iris.load(sys.argv[1])
out = []
for cube in cubes:
    out.append({
        "var_name": cube.var_name,
        "standard_name": cube.standard_name,
        "units": str(cube.units),
        "dims": [c.name() for c in cube.dim_coords],
        "scalar": {c.name(): [float(c.points[0]) if c.points.dtype.kind in "fiu" else str(c.points[0]),
                              str(c.units)] for c in cube.coords(dimensions=())},
        "aux": {c.var_name or c.name(): [str(p) for p in c.points.ravel()[:8]] for c in cube.aux_coords if c.ndim},
    })
print(json.dumps(out))
"""


def compliance_errors(path: Path, version: str = "1.8") -> list[str]:
    """Failed error-level checks of ``compliance-checker --test=cf:VERSION`` on ``path``."""
    report = path.with_name(path.name + ".cc.json")
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("compliance-checker")),
            f"--test=cf:{version}",
            "-f",
            "json",
            "-o",
            str(report),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if not report.exists():
        raise RuntimeError(f"compliance-checker failed: {done.stderr[-2000:]}")
    results = json.loads(report.read_text())[f"cf:{version}"]
    report.unlink()
    return [
        message
        for check in results["high_priorities"]
        if check["value"][0] < check["value"][1]
        for message in check["msgs"]
    ]


def cfchecks_messages(path: Path) -> dict[str, list[str]]:
    """``{"version": "CF-1.8", "ERROR": [...], "WARN": [...]}``: cfchecks at the declared version."""
    empty = path.with_name(path.name + ".tables.xml")
    done = subprocess.run(
        [sys.executable, "-c", CFCHECKS, str(path), str(empty)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    empty.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"cfchecks failed on {path}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def iris_cubes(path: Path) -> list[dict]:
    """Iris's cubes of ``path``: names, units, dim coords, scalar and auxiliary coords."""
    done = subprocess.run(
        [sys.executable, "-c", IRIS, str(path)], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"iris failed on {path}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def tool(name: str) -> str | None:
    """Path of a command-line tool (``cdo``, ``ncks``), or None where it is not installed."""
    return shutil.which(name)
