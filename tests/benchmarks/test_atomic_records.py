"""Every file a benchmark writes goes through :func:`forecast.files.atomic_write`.

A benchmark killed while it writes a record must leave the old record or the
new one, never half of one, or its rerun (which reads the records it finds)
breaks. The scan finds each ``write_text``/``write_bytes`` call and each
``open`` for writing in ``benchmarks/*.py``: a write is atomic when it writes
the temporary path that ``atomic_write`` (or ``write_json_atomic``, which
calls it) hands to its writer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ATOMIC = {"atomic_write", "write_json_atomic"}
#: ``open(..., "a")`` of a subprocess's log: a log, not a record a rerun reads.
LOGS = {("dyffusion_evidence.py", "log or os.devnull")}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _plain_writes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def inside_atomic(node: ast.AST) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, ast.Call) and _name(node.func) in ATOMIC:
                return True
        return False

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        if name in ("write_text", "write_bytes") and not inside_atomic(node):
            found.append(f"{path.name}:{node.lineno} {ast.unparse(node.func)}")
        if name == "open" and isinstance(node.func, ast.Name):
            modes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
            modes += [k.value.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)]  # fmt: skip
            target = ast.unparse(node.args[0]) if node.args else ""
            writes = any(set(str(m)) & set("wax+") for m in modes)
            if writes and (path.name, target) not in LOGS and not inside_atomic(node):
                found.append(f"{path.name}:{node.lineno} open({target}, {modes[0]!r})")
    return found


@pytest.mark.parametrize("path", sorted((REPO / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_write_their_files_atomically(path):
    assert _plain_writes(path) == []


def test_the_scan_finds_a_plain_write_and_passes_an_atomic_one(tmp_path):
    script = tmp_path / "bench.py"
    script.write_text(
        "import json\nfrom forecast.files import atomic_write\n"
        "record.write_text(json.dumps(result))\n"
        "atomic_write(record, lambda temporary: temporary.write_text(json.dumps(result)))\n"
        "with open(out, 'a') as handle:\n    handle.write('x')\n"
        "with open(out) as handle:\n    handle.read()\n"
    )
    assert _plain_writes(script) == ["bench.py:3 record.write_text", "bench.py:5 open(out, 'a')"]
