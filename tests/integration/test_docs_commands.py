"""Every command printed in README.md and docs/quickstart.md, run for real on tiny settings.

The fenced code blocks of the two documents are parsed into commands (shell
lines, ``\\`` continuations joined and comments dropped; Python snippets
whole). Each command is either run here or listed in :data:`NOT_RUNNABLE`
with the reason, so a command added to the docs without coverage fails
:func:`test_every_documented_command_is_covered`.

``forecast`` commands run in-process through :func:`forecast.cli.main.main`,
in document order, in one temporary directory per document (relative paths
such as ``work/demo/...`` or ``era5.zarr`` land there), with:

- ``configs/demo/X.yaml`` replaced by the tiny config of :data:`TINY_CONFIGS`
  (the real file must exist and be valid for its subcommand);
- ``../shared/data/real/...`` read in place, skipped when absent;
- the flag values of :data:`TINY_VALUES` replaced and :data:`TINY_FLAGS`
  added (flags win over a config), so that a run takes seconds;
- unquoted globs expanded as the shell would (quoted ones are passed on).

The quickstart starts from ERA5 files downloaded from the CDS: here
:func:`write_cds_month` plays the CDS and writes small ``pl_YYYY-MM.nc`` and
``sfc_YYYY-MM.nc`` files in its NetCDF layout, for October to December 2020
before the first command and for any other month when a command names its
file. An untagged fenced block right after a command block is that command's
expected output: its lines must appear in the command's stdout, with only the
fragments of :data:`TINY_OUTPUT` changed and durations free. The files that a
command names must exist and hold what it says (:func:`assert_products`).
"""

from __future__ import annotations

import ast
import glob
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

# Import cartopy before any NetCDF I/O in this process (see forecast/cli/demo.py: the other
# order aborts the interpreter at exit with this release's netCDF4 and pyproj wheels).
import cartopy.crs  # noqa: F401
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from forecast.cli.main import main

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
DOCS = ("README.md", "docs/quickstart.md")
SHELL_LANGUAGES = ("bash", "sh", "shell", "console")

#: Documented commands this test does not run, each with the reason.
NOT_RUNNABLE = {
    "make demo": "the 5-10 minute demo; its stages are README's forecast lines, run here tiny",
    "make test": "runs the whole test suite, this test included",
    "source .venv/bin/activate": "changes the calling shell's environment; nothing to run",
    **dict.fromkeys(
        (
            "forecast ingest 's3://bucket/era5/*.nc' --out s3://bucket/era5.zarr",
            "forecast train --data s3://bucket/era5.zarr --model sfno --out s3://bucket/runs/sfno",
            "forecast run --checkpoint s3://bucket/runs/sfno/best.ckpt --data s3://bucket/era5.zarr "
            "--init 2020-01-01T00 --steps 20 --out s3://bucket/fc.zarr",
            "forecast score s3://bucket/fc.zarr --truth s3://bucket/era5.zarr --out s3://bucket/scores.nc",
        ),
        "needs an S3 bucket; the same chain runs on a moto S3 server in "
        "tests/integration/test_object_storage_chain.py",
    ),
}

#: Tiny stand-ins for the configs the docs name (keys mirror the flags, as in the real files).
TINY_CONFIGS = {
    "configs/demo/synth.yaml": (
        "grid: 16x32\nstart: '2020-01-01'\ndays: 6\nstep: 6h\ncalendar: standard\nseed: 1\n"
        "spinup-days: 1\n"
    ),
    "configs/demo/ingest.yaml": "grid: source\nstep: 6h\nchannels: [z500, t2m]\n",
    "configs/demo/train.yaml": (
        "model: sfno\nhparams: {embed_dim: 8, num_layers: 2}\ndiurnal-baseline: true\nmax-steps: 4\nrollout-steps: 2\n"
        "batch-size: 2\nval-fraction: 0.3\nval-every: 4\nval-samples: 2\nworkers: 0\ndevice: cpu\n"
    ),
    "configs/demo/run.yaml": (
        "init: 2020-01-04T00/2020-01-04T12/12h\nsteps: 4\nmembers: 3\nperturbation: grf\n"
        "amplitude: '0.05'\nseed: 0\n"
    ),
    "configs/demo/score.yaml": "lead-for-maps: 24h\n",
}

#: Flag values that would take minutes or hours, replaced wherever a documented command gives them.
TINY_VALUES = {
    "ingest": {"--grid": "15deg"},
    "train": {"--hparams": "embed_dim=8,num_layers=2", "--max-steps": "4"},
    "run": {"--members": "4"},
}

#: Flags added to every documented command of a subcommand.
TINY_FLAGS = {
    "train": "--channels z500,t2m --batch-size 2 --val-every 4 --val-samples 2 --workers 0"
    " --device cpu --no-progress",
    "run": "--device cpu --no-progress",
    "score": "--no-progress",
}

#: Expected-output fragments that the tiny settings change: documented text -> text here.
TINY_OUTPUT = {
    "1464 times 2020-01-01T00:00": "368 times 2020-10-01T00:00",  # a quarter of 2020 here
    "181x360": "13x24",  # --grid 1.0deg is 15deg here
}

#: Subcommands this test knows how to run tiny.
RUNNABLE_SUBCOMMANDS = ("synth", "ingest", "train", "run", "score")

#: The CDS's grid and the quickstart's year (docs/quickstart.md, "1. Download").
CDS_LATITUDE = np.linspace(90.0, -90.0, 19)
CDS_LONGITUDE = np.arange(0.0, 360.0, 10.0)
CDS_FILE = re.compile(r"(?:.*/)?(pl|sfc)_(\d{4})-(\d{2})\.nc")


# -- the documents ------------------------------------------------------------------------


@dataclass(frozen=True)
class DocCommand:
    """One command of a document.

    Attributes
    ----------
    doc : str
        Document path relative to the repository.
    line : int
        Line number where the command starts.
    language : str
        ``"shell"`` (one command line) or ``"python"`` (a whole snippet).
    text : str
        The command with continuations joined, comments dropped, whitespace normalised;
        the snippet's code for Python.
    expected : str or None
        The untagged block printed right after the command's block: its expected output.
    """

    doc: str
    line: int
    language: str
    text: str
    expected: str | None = None

    @property
    def id(self) -> str:
        """``doc:line first-words`` for test ids and messages."""
        return f"{self.doc}:{self.line} {self.text.splitlines()[0][:60]}"


FENCE = re.compile(r"^(```|~~~)\s*([\w+-]*)\s*$")


def read_blocks(markdown: str) -> list[tuple[int, str, list[str]]]:
    """The fenced code blocks of a Markdown text as ``(first content line, language, lines)``."""
    blocks: list[tuple[int, str, list[str]]] = []
    current: tuple[int, str, list[str]] | None = None
    for number, line in enumerate(markdown.splitlines(), 1):
        fence = FENCE.match(line.strip())
        if current is None:
            if fence:
                current = (number + 1, fence.group(2).lower(), [])
        elif fence and not fence.group(2):
            blocks.append(current)
            current = None
        else:
            current[2].append(line)
    assert current is None, f"the code block opened at line {current[0] - 1} never closes"
    return blocks


def strip_comment(text: str) -> str:
    """``text`` without a shell comment (``#`` starting a word outside quotes)."""
    quote = None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text


def shell_commands(first: int, lines: list[str]) -> list[tuple[int, str]]:
    """The command lines of a shell block as ``(line number, text)``."""
    commands, pending, start = [], "", None
    for number, raw in enumerate(lines, first):
        line = raw.strip().removeprefix("$ ")
        if not pending and (not line or line.startswith("#")):
            continue
        start = number if start is None else start
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        commands.append((start, " ".join(strip_comment(pending + line).split())))
        pending, start = "", None
    assert not pending, f"line {start}: a continuation '\\' ends the block"
    return commands


def parse_doc(doc: str, markdown: str) -> tuple[list[DocCommand], list[str]]:
    """The commands of document ``doc`` in order, and the problems found (orphan output blocks)."""
    commands: list[DocCommand] = []
    problems: list[str] = []
    previous_language = None
    for first, language, lines in read_blocks(markdown):
        if language in SHELL_LANGUAGES:
            commands += [
                DocCommand(doc, n, "shell", text) for n, text in shell_commands(first, lines)
            ]
        elif language == "python":
            commands.append(DocCommand(doc, first, "python", "\n".join(lines).strip()))
        elif not language:
            if previous_language not in SHELL_LANGUAGES or not commands:
                problems.append(f"{doc}:{first}: untagged block not right after a command block")
            else:
                last = commands.pop()
                expected = "\n".join(lines).strip()
                commands.append(DocCommand(last.doc, last.line, last.language, last.text, expected))
        previous_language = language
    return commands, problems


def documented_commands() -> tuple[list[DocCommand], list[str]]:
    """Every command of :data:`DOCS`, in order, and the problems found while parsing."""
    commands, problems = [], []
    for doc in DOCS:
        found, trouble = parse_doc(doc, (REPO / doc).read_text())
        commands += found
        problems += trouble
    return commands, problems


def runs_here(command: DocCommand) -> bool:
    """Whether this test runs ``command`` (Python snippets and the forecast subcommands)."""
    if command.text in NOT_RUNNABLE:
        return False
    if command.language == "python":
        return True
    words = command.text.split()
    return len(words) > 1 and words[0] == "forecast" and words[1] in RUNNABLE_SUBCOMMANDS


COMMANDS, PARSE_PROBLEMS = documented_commands()
RUNNABLE = [command for command in COMMANDS if runs_here(command)]


# -- the CDS, played here -----------------------------------------------------------------


def cds_fields(times: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Smooth, moving, ERA5-like fields in SI units, shape ``(time[, level], lat, lon)``.

    A zonal jet, an eastward-travelling wave (period 5 days), a diurnal cycle
    following the sun and a seasonal cycle, plus a little noise; levels are
    850 then 500 hPa.
    """
    rng = np.random.default_rng(seed)
    hours = (times - np.datetime64("2020-01-01T00", "h")) / np.timedelta64(1, "h")
    t = hours[:, None, None]
    lat = np.deg2rad(CDS_LATITUDE)[None, :, None]
    lon = np.deg2rad(CDS_LONGITUDE)[None, None, :]
    season = np.cos(2 * np.pi * t / (24 * 365.25)) * np.sin(lat)
    wave = np.cos(lat) ** 2 * np.cos(3 * lon - 2 * np.pi * t / 120)
    sun = np.cos(lat) * np.cos(lon + 2 * np.pi * t / 24)
    cold_poles = np.sin(lat) ** 2

    def field(mean: float, pole: float, wave_amplitude: float, noise: float, **extra: float):
        values = mean - pole * cold_poles + wave_amplitude * wave
        values = values + extra.get("season", 0.0) * season + extra.get("sun", 0.0) * sun
        return values + noise * rng.standard_normal(values.shape)

    levels = {
        "z": ((1.45e4, 1.2e3, 300, 20), (5.75e4, 4.0e3, 800, 40)),
        "t": ((288.0, 35.0, 3, 0.3), (262.0, 30.0, 2, 0.3)),
        "u": ((0.0, -15.0, 6, 0.5), (5.0, -25.0, 10, 0.5)),
        "v": ((0.0, 0.0, 5, 0.5), (0.0, 0.0, 8, 0.5)),
    }
    fields = {
        name: np.stack([field(*spec) for spec in specs], axis=1) for name, specs in levels.items()
    }
    fields["t2m"] = field(290.0, 45.0, 3, 0.3, season=10.0, sun=6.0)
    fields["u10"] = field(0.0, -6.0, 3, 0.3)
    fields["v10"] = field(0.0, 0.0, 3, 0.3)
    fields["msl"] = field(101325.0, 0.0, 1200, 30)
    return {name: values.astype(np.float32) for name, values in fields.items()}


def write_cds_month(era5: Path, year: int, month: int) -> list[Path]:
    """Write ``pl_YYYY-MM.nc`` and ``sfc_YYYY-MM.nc`` as the CDS delivers them (6-hourly, NetCDF).

    Returns
    -------
    list of Path
        The pressure-level and the single-level file.
    """
    from forecast.grid import Grid
    from pipelines.synthetic import variable_attrs

    grid = Grid.equiangular(CDS_LATITUDE.size, CDS_LONGITUDE.size)
    start = pd.Timestamp(year=year, month=month, day=1)
    times = pd.date_range(start, start + pd.offsets.MonthBegin(1), freq="6h", inclusive="left")
    times = times.values.astype("datetime64[ns]")
    fields = cds_fields(times, seed=year * 100 + month)
    coords = {
        "number": ((), np.int64(0), {"long_name": "ensemble member numerical id"}),
        "valid_time": ("valid_time", times, {"standard_name": "time"}),
        "latitude": ("latitude", CDS_LATITUDE, {"units": "degrees_north"}),
        "longitude": ("longitude", CDS_LONGITUDE, {"units": "degrees_east"}),
        "expver": ("valid_time", np.asarray(["0001"] * len(times), dtype=object)),
    }
    level = {"pressure_level": ("pressure_level", [850.0, 500.0], {"units": "hPa"})}
    era5.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, names in (("pl", ("z", "t", "u", "v")), ("sfc", ("t2m", "u10", "v10", "msl"))):
        dims = ("valid_time", "pressure_level") if kind == "pl" else ("valid_time",)
        data = {
            name: ((*dims, "latitude", "longitude"), fields[name], variable_attrs(name, grid))
            for name in names
        }
        dataset = xr.Dataset(data, coords={**coords, **(level if kind == "pl" else {})})
        dataset.attrs["Conventions"] = "CF-1.7"
        path = era5 / f"{kind}_{year:04d}-{month:02d}.nc"
        encoding = {"valid_time": {"units": "seconds since 1970-01-01", "dtype": "int64"}}
        dataset.to_netcdf(path, encoding=encoding)
        written.append(path)
    return written


# -- running a command tiny -----------------------------------------------------------------


@dataclass
class DocRun:
    """Working directory of one document's commands and the outputs of those that failed."""

    workdir: Path
    broken: dict[str, str] = field(default_factory=dict)  # output path -> command that failed

    def needs_broken(self, command: DocCommand) -> str | None:
        """The failed (or skipped) command whose output ``command`` reads, if any."""
        return next((c for path, c in self.broken.items() if path in command.text), None)


@pytest.fixture(scope="module")
def tiny_configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Documented config path -> the tiny file written for it."""
    folder = tmp_path_factory.mktemp("tiny-configs")
    paths = {}
    for name, text in TINY_CONFIGS.items():
        paths[name] = folder / name.replace("/", "_")
        paths[name].write_text(text)
    return paths


@pytest.fixture(scope="module")
def doc_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DocRun]:
    """One working directory per document; the quickstart's holds the 2020 'download'."""
    runs = {doc: DocRun(tmp_path_factory.mktemp(Path(doc).stem)) for doc in DOCS}
    # Quickstart "1. Download", one request per month; the last quarter of 2020 is enough for its
    # dates (training before --val-start 2020-11-01, forecasts from December) and takes a quarter
    # of the time to ingest.
    for month in (10, 11, 12):
        write_cds_month(runs["docs/quickstart.md"].workdir / "era5", 2020, month)
    return runs


def expand(command: DocCommand, configs: dict[str, Path]) -> list[str]:
    """The documented command as the argv of ``forecast``, tiny and with globs expanded.

    Skips the test when it reads ``../shared`` files that are absent; fails when it
    names a config without a tiny stand-in.
    """
    argv = []
    for quoted, word in zip(
        shlex.split(command.text, posix=False), shlex.split(command.text), strict=True
    ):
        if word in configs:
            assert (REPO / word).is_file(), f"{command.id}: {word} does not exist"
            argv.append(str(configs[word]))
        elif word.startswith("configs/"):
            pytest.fail(f"{command.id}: no tiny stand-in for {word}; add one to TINY_CONFIGS")
        elif word.startswith("../shared/"):
            path = SHARED / word.removeprefix("../shared/")
            if not path.exists():
                pytest.skip(f"{path} is absent (real data lives in ../shared/data/real)")
            argv.append(str(path))
        elif quoted[0] not in "'\"" and glob.has_magic(word):
            argv += sorted(glob.glob(word)) or [word]  # bash keeps an unmatched glob as is
        else:
            argv.append(word)
    assert argv[0] == "forecast", command.id
    argv = argv[1:]
    tiny = TINY_VALUES.get(argv[0], {})
    for i in range(1, len(argv) - 1):
        if argv[i] in tiny:
            argv[i + 1] = tiny[argv[i]]
    return argv + TINY_FLAGS.get(argv[0], "").split()


def download_named_files(argv: list[str]) -> None:
    """Write the CDS files that ``argv`` names and that were not downloaded yet."""
    for word in argv:
        match = CDS_FILE.fullmatch(word)
        if match and not Path(word).exists():
            write_cds_month(Path(word).parent, int(match.group(2)), int(match.group(3)))


def outputs_of(command: DocCommand) -> list[str]:
    """The paths a documented command writes: ``--out``, ``--plots``, synth's OUT_DIR."""
    if command.language != "shell":
        return []
    words = shlex.split(command.text)
    synth_dir = words[2:3] if words[:2] == ["forecast", "synth"] else []
    return [path for path in (flag(words, "--out"), flag(words, "--plots"), *synth_dir) if path]


def flag(argv: list[str], name: str) -> str | None:
    """The value of flag ``name`` in ``argv`` (the last one given), or None."""
    values = [argv[i + 1] for i in range(len(argv) - 1) if argv[i] == name]
    return values[-1] if values else None


def assert_expected_output(command: DocCommand, stdout: str) -> None:
    """Each line of the documented output appears in ``stdout``, in order."""
    changing = [re.escape(fragment) for fragment in TINY_OUTPUT] + [r"\d+(?:\.\d+)? s\b"]
    position = 0
    for line in filter(None, (line.strip() for line in command.expected.splitlines())):
        pattern = ""
        for piece in re.split(f"({'|'.join(changing)})", line):
            if piece in TINY_OUTPUT:
                pattern += re.escape(TINY_OUTPUT[piece])
            elif re.fullmatch(r"\d+(?:\.\d+)? s", piece):
                pattern += r"\d+(?:\.\d+)? s"  # a duration
            else:
                pattern += re.escape(piece)
        found = re.compile(pattern).search(stdout, position)
        assert found, f"{command.id}: documented output line {line!r} not in:\n{stdout}"
        position = found.end()


def assert_products(argv: list[str], stdout: str) -> None:
    """The files that the command names exist and hold what it says."""
    subcommand, out = argv[0], flag(argv, "--out")
    if subcommand == "synth":
        assert sorted(Path(argv[1]).glob("era5_synthetic_*.nc")), argv[1]
    elif subcommand == "ingest":
        verb = "appended to" if "--append" in argv else "wrote"
        assert f"{verb} {out}: " in stdout
        store = xr.open_zarr(out)
        assert store["data"].dims == ("time", "channel", "latitude", "longitude")
        assert store.sizes["time"] > 1 and float(store.latitude[0]) > float(store.latitude[-1])
    elif subcommand == "train":
        assert f"checkpoints in {out}" in stdout
        for name in ("best.ckpt", "latest.ckpt", "config.yaml", "metrics.jsonl"):
            assert (Path(out) / name).is_file(), name
    elif subcommand == "run":
        match = re.search(
            r"wrote (\S+): (\d+) init time\(s\) x (\d+) member\(s\) x (\d+) step", stdout
        )
        assert match and match.group(1) == out, stdout
        inits, members, steps = (int(match.group(i)) for i in (2, 3, 4))
        forecast = xr.open_zarr(out) if out.endswith(".zarr") else xr.open_dataset(out)
        assert set(forecast.dims) == {
            "time",
            "member",
            "lead_time",
            "latitude",
            "longitude",
            "bnds",
        }
        sizes = forecast.sizes
        assert (sizes["time"], sizes["member"], sizes["lead_time"]) == (inits, members, steps + 1)
        assert forecast["lead_time"].values[0] == np.timedelta64(0, "ns")
        for name, value in (("--members", members), ("--steps", steps)):
            assert flag(argv, name) in (None, str(value)), name
        if flag(argv, "--init") and "/" in flag(argv, "--init"):
            start, end, step = flag(argv, "--init").split("/")
            assert inits == len(pd.date_range(start, end, freq=step))
        assert Path(f"{out}.manifest.json").is_file()
    elif subcommand == "score":
        from forecast.scoring.scores_file import open_scores

        scores = open_scores(out)
        assert {"model", "channel", "lead_time"} <= set(scores["rmse"].dims)
        assert {"persistence", "climatology"} <= {str(m) for m in scores["model"].values}
        assert np.isfinite(scores["rmse"].values).any()
        assert sorted(Path(flag(argv, "--plots")).glob("*.png")), "no plots drawn"


def run_python(code: str) -> object:
    """Execute a documented snippet; returns the value of its last expression, if any."""
    tree = ast.parse(code)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    namespace: dict[str, object] = {}
    exec(compile(tree, "<doc snippet>", "exec"), namespace)
    if last is None:
        return None
    return eval(compile(ast.Expression(last.value), "<doc snippet>", "eval"), namespace)


# -- the tests ----------------------------------------------------------------------------


def test_every_documented_command_is_covered() -> None:
    uncovered = [
        f"{c.id}: run it here or add it to NOT_RUNNABLE with a reason"
        for c in COMMANDS
        if not runs_here(c) and c.text not in NOT_RUNNABLE
    ]
    texts = {c.text for c in COMMANDS}
    expected = "\n".join(c.expected or "" for c in COMMANDS)
    stale = [f"NOT_RUNNABLE: {text!r} is in no doc" for text in NOT_RUNNABLE if text not in texts]
    stale += [
        f"TINY_CONFIGS: {n} is in no command" for n in TINY_CONFIGS if n not in "\n".join(texts)
    ]
    stale += [
        f"TINY_OUTPUT: {f!r} is in no expected output" for f in TINY_OUTPUT if f not in expected
    ]
    assert not PARSE_PROBLEMS + uncovered + stale, "\n".join(PARSE_PROBLEMS + uncovered + stale)
    for doc in DOCS:
        assert any(c.doc == doc and runs_here(c) for c in COMMANDS), f"no command found in {doc}"


def test_parser_reads_commands_as_a_shell_would() -> None:
    markdown = "\n".join(
        [
            "Intro `forecast synth inline` is prose.",
            "```bash",
            "# a comment line",
            "make demo    # trailing comment",
            "$ forecast ingest 'a/*.nc' \\",
            "    --out 'x #1.zarr'",
            "```",
            "",
            "```",
            "wrote x #1.zarr",
            "```",
            "```python",
            "import xarray as xr",
            "xr.Dataset()",
            "```",
            "```",
            "orphan output",
            "```",
            "```yaml",
            "grid: 32x64",
            "```",
        ]
    )
    commands, problems = parse_doc("doc.md", markdown)
    assert [(c.line, c.language, c.text, c.expected) for c in commands] == [
        (4, "shell", "make demo", None),
        (5, "shell", "forecast ingest 'a/*.nc' --out 'x #1.zarr'", "wrote x #1.zarr"),
        (13, "python", "import xarray as xr\nxr.Dataset()", None),
    ]
    assert problems == ["doc.md:17: untagged block not right after a command block"]


@pytest.mark.parametrize("config", sorted(TINY_CONFIGS))
def test_documented_config_is_valid_for_its_command(config: str, capsys) -> None:
    """The real file behind each tiny stand-in is accepted by the subcommand that uses it."""
    users = {c.text.split()[1] for c in COMMANDS if config in c.text.split()}
    assert len(users) == 1, f"{config} used by {users}"
    with pytest.raises(SystemExit) as done:
        main([users.pop(), "--config", str(REPO / config), "--help"])
    assert done.value.code == 0, capsys.readouterr().err


@pytest.mark.parametrize("command", RUNNABLE, ids=[c.id for c in RUNNABLE])
def test_documented_command_runs(
    command: DocCommand,
    doc_runs: dict[str, DocRun],
    tiny_configs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    state = doc_runs[command.doc]
    outputs = outputs_of(command)
    failed = state.needs_broken(command)
    state.broken.update(dict.fromkeys(outputs, command.id))  # until it passes
    if failed:
        pytest.skip(f"reads the output of {failed}, which failed or was skipped")
    monkeypatch.chdir(state.workdir)
    if command.language == "python":
        result = run_python(command.text)
        if isinstance(result, xr.DataArray):
            assert result.size > 0 and np.isfinite(result.values).all()
        return
    argv = expand(command, tiny_configs)
    download_named_files(argv)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse rejected the command line
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 0, f"{command.id}\nforecast {shlex.join(argv)} exited {code}:\n{err[-3000:]}"
    assert_products(argv, out)
    if command.expected:
        assert_expected_output(command, out)
    for path in outputs:
        del state.broken[path]
