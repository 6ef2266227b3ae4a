"""Subcommand config models: every YAML under configs/ loads, YAML -> model -> flags, one default."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forecast.cli.config import read_config_file, resolve
from forecast.cli.main import COMMANDS, build_parser
from forecast.errors import ConfigError
from forecast.models import MODELS, hparams_to_dict
from forecast.training.families import FAMILIES, validate_family_hparams
from forecast.training.request import TrainRequest
from inference.request import RunRequest

REPO = Path(__file__).resolve().parents[3]
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml"))

#: What a config file leaves to the command line (paths of the user's data).
REQUIRED = {
    "synth": {"out_dir": "out"},
    "ingest": {"sources": ["a.nc"], "out": "store.zarr"},
    "train": {"data": "store.zarr", "out": "runs/x"},
    "run": {"checkpoint": "m.ckpt", "data": "store.zarr", "out": "fc.zarr"},
    "score": {"forecast": "fc.zarr", "truth": "store.zarr"},
}


def command_of(path: Path) -> str:
    """``configs/demo/run.yaml`` -> run; ``configs/train/*.yaml`` and ``train_afno.yaml`` -> train."""
    if path.parent.name == "train" or path.stem.startswith("train"):
        return "train"
    return path.stem


def config_class(command: str):
    return importlib.import_module(COMMANDS[command][0]).Config


def parse(command: str, argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args([command, *argv])


def test_every_configs_directory_file_is_covered():
    assert len(CONFIGS) >= 10
    assert {command_of(p) for p in CONFIGS} == set(REQUIRED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_yaml_under_configs_loads_through_its_model(path: Path):
    command = command_of(path)
    config = resolve(config_class(command), argparse.Namespace(**REQUIRED[command]), path, command)
    loaded = yaml.safe_load(path.read_text())
    values = config.model_dump()
    for key, value in loaded.items():
        name = key.replace("-", "_")
        if command == "train" and name == "model":
            # the chosen model and every section, each validated by its hyperparameter class
            assert config.model.name == value["name"]
            for family, section in value.items():
                if family != "name":
                    assert family in FAMILIES
                    expected = hparams_to_dict(validate_family_hparams(family, section))
                    assert config.model.sections[family] == expected
                    for key_, given in section.items():  # what the file says, defaults around it
                        assert expected[key_] == given or expected[key_] == [given, given]
            continue
        if isinstance(value, str) and name in ("channel_weights", "rollout_schedule"):
            continue  # text forms, parsed (checked below for train)
        got = values[name]
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    if command == "train":
        request = config.to_request()
        assert request.model == loaded["model"]["name"]
        assert request.hparams == config.model.sections.get(request.model, {})


def test_demo_train_config_holds_each_backbone():
    path = REPO / "configs" / "demo" / "train.yaml"
    config = resolve(config_class("train"), argparse.Namespace(**REQUIRED["train"]), path, "train")
    assert set(config.model.sections) == set(MODELS)
    fno = resolve(
        config_class("train"), parse("train", ["--model", "fno", *_required_flags()]), path, "train"
    ).to_request()
    # --model picks another backbone and keeps the file's sections: fno gets fno's hyperparameters
    assert fno.model == "fno" and fno.hparams["embed_dim"] == 32 and "pos_embed" not in fno.hparams
    wide = resolve(
        config_class("train"),
        parse("train", ["--hparams", "embed_dim=48", *_required_flags()]),
        path,
        "train",
    ).to_request()
    assert wide.model == "sfno" and wide.hparams["embed_dim"] == 48
    assert wide.hparams["pos_embed"] == "learned"  # the section's other values stay


def _required_flags() -> list[str]:
    return ["--data", "store.zarr", "--out", "runs/x"]


def _run_flags() -> list[str]:
    return ["--checkpoint", "m.pt", "--data", "s.zarr", "--init", "2020-01-01", "--out", "o.zarr"]


def test_flags_override_yaml_and_keys_mirror_flags(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(
        "model: fno\nmax-steps: 7\nbatch_size: 4\nno-progress: true\nstate-loss: true\n"
        "channels: z500,t850\nchannel-weights: {t850: 2}\nrollout-schedule: '0:1,5:2'\nrollout-steps: 2\n"
    )
    config = resolve(
        config_class("train"), parse("train", ["--max-steps", "9", *_required_flags()]), path
    )
    request = config.to_request()
    assert request.max_steps == 9 and request.batch_size == 4  # the flag wins, the file fills
    assert request.progress is False and request.tendency_loss is False  # negated flag names
    assert request.channels == ("z500", "t850") and request.channel_weights == {"t850": 2.0}
    assert request.rollout_schedule == ((0, 1), (5, 2))
    assert request.data == Path("store.zarr") and request.model == "fno"


def test_defaults_are_defined_once():
    train = config_class("train")
    for item in dataclasses.fields(TrainRequest):
        if item.name in ("data", "model", "out"):
            continue
        default = (
            item.default if item.default is not dataclasses.MISSING else item.default_factory()
        )
        assert train.model_fields[item.name].default == default, item.name
    # flags that were not given leave the request's defaults in place
    request = resolve(train, parse("train", ["--model", "sfno", *_required_flags()])).to_request()
    assert request == TrainRequest("store.zarr", "sfno", "runs/x")
    run = config_class("run")
    field = next(f for f in dataclasses.fields(RunRequest) if f.name == "on_blowup")
    assert run.model_fields["on_blowup"].default == field.default
    # --members: the request's default for one checkpoint, one member per checkpoint for several
    from forecast.cli.run import members_of

    given = resolve(run, parse("run", _run_flags()))
    members = next(f for f in dataclasses.fields(RunRequest) if f.name == "members")
    assert members_of(given, 1) == members.default and members_of(given, 4) == 4
    assert members_of(resolve(run, parse("run", [*_run_flags(), "--members", "5"])), 4) == 5
    with pytest.raises(ConfigError, match="runs only 3 of the 4 checkpoints"):
        members_of(resolve(run, parse("run", [*_run_flags(), "--members", "3"])), 4)


def test_help_shows_the_model_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-steps N optimiser steps (default 1000)" in text
    assert "--warmup-steps N linear warm-up steps before the cosine decay (default 50)" in text
    assert "--no-residual turn off: predict the tendency" in text


def test_config_errors_are_one_line(tmp_path):
    train = config_class("train")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("max-stepz: 3\n")
    with pytest.raises(
        ConfigError, match=r"unknown key 'max-stepz' for 'forecast train'.*max-steps"
    ):
        read_config_file(unknown, train, "train")
    with pytest.raises(ConfigError, match=r"missing --data"):
        resolve(train, parse("train", ["--model", "sfno", "--out", "x"]))
    with pytest.raises(ConfigError, match=r"invalid --max-steps '0': .*greater than or equal to 1"):
        resolve(train, parse("train", ["--max-steps", "0", "--model", "fno", *_required_flags()]))
    bad_section = tmp_path / "section.yaml"
    bad_section.write_text("model: {name: sfno, afno: {num_layers: 3}}\n")
    with pytest.raises(ConfigError, match=r"unknown hyperparameter 'num_layers'") as info:
        resolve(train, argparse.Namespace(**REQUIRED["train"]), bad_section, "train")
    assert str(bad_section) in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown model 'resnet'"):
        resolve(train, parse("train", ["--model", "resnet", *_required_flags()]))
    not_yaml = tmp_path / "bad.yaml"
    not_yaml.write_text("a: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config_file(not_yaml, train, "train")


def test_positional_and_list_options():
    ingest = config_class("ingest")
    config = resolve(
        ingest, parse("ingest", ["a.nc", "b.nc", "--out", "s.zarr", "--channels", "z500,t2m"])
    )
    assert config.sources == ["a.nc", "b.nc"] and config.channels == ["z500", "t2m"]
    with pytest.raises(ConfigError, match="missing SOURCE"):
        resolve(ingest, parse("ingest", ["--out", "s.zarr"]))
    score = config_class("score")
    boxes = resolve(
        score,
        parse("score", ["f.zarr", "--truth", "t.zarr", "--region", "global", "eu=35,72,0,45"]),
    )
    assert boxes.region == ["global", "eu=35,72,0,45"]  # a box keeps its commas


def test_a_command_that_does_not_train_starts_without_the_models():
    """``forecast ingest`` builds only its own parser: no torch, no torch-harmonics (seconds)."""
    command = "ingest"
    script = (
        "import sys\nfrom forecast.cli.main import main\n"
        f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'torch_harmonics', 'forecast.models') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    assert f"usage: forecast {command}" in done.stdout and "--no-progress" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"
    with pytest.raises(SystemExit):  # the other commands are names with their help only
        build_parser(only=command).parse_args(["train", "--max-steps", "2"])
    assert build_parser().parse_args(["train", "--max-steps", "2"]).max_steps == "2"
