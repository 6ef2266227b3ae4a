"""``forecast import`` refuses what it cannot convert with one line naming the problem, and never runs pickled code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from forecast.checkpoint import checkpoint_digest, read_metadata
from forecast.cli import import_ as import_cli
from forecast.cli.main import main
from forecast.importers import IMPORTERS
from forecast.importers.fourcastnet import CHANNELS_20
from tests.forecast import fourcastnet_reference as reference

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def v2_files(tmp_path_factory):
    """Published-layout v2-small weights (small size) and statistics."""
    folder = tmp_path_factory.mktemp("v2")
    network = reference.sfnonet().FourierNeuralOperatorNet(
        img_size=(9, 16), in_chans=73, out_chans=73, embed_dim=8, num_layers=3, scale_factor=2
    )
    weights = reference.save_published(reference.randomize(network, 0), folder / "weights.tar")
    means, stds = reference.save_statistics(np.zeros(73), np.ones(73), folder)
    return weights, means, stds


@pytest.fixture(scope="module")
def v1_files(tmp_path_factory):
    """Published-layout v1 weights (20 channels, small size) and statistics."""
    folder = tmp_path_factory.mktemp("v1")
    network = reference.afnonet().AFNONet(
        img_size=(8, 16),
        patch_size=(4, 4),
        in_chans=20,
        out_chans=20,
        embed_dim=16,
        depth=2,
        num_blocks=2,
    )
    weights = reference.save_published(reference.randomize(network, 0), folder / "backbone.ckpt")
    means, stds = reference.save_statistics(np.zeros(21), np.ones(21), folder)
    return weights, means, stds


def _import(capsys, model, weights, means, stds, out, *flags) -> tuple[int, str]:
    argv = ["import", model, "--weights", str(weights), "--means", str(means), "--stds", str(stds)]
    code = main([*argv, "--out", str(out), "--no-progress", *flags])
    return code, capsys.readouterr().err


def _one_line_error(code: int, err: str) -> str:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("forecast import: error: "), err
    return lines[0]


def _edited_state(weights: Path, folder: Path, edit) -> Path:
    payload = torch.load(weights, weights_only=True)
    edit(payload["model_state"])
    path = folder / "edited.tar"
    torch.save(payload, path)
    return path


def test_a_file_that_is_not_a_checkpoint(v2_files, tmp_path, capsys):
    _, means, stds = v2_files
    garbage = tmp_path / "weights.tar"
    garbage.write_bytes(b"not a torch file\x00" * 10)
    line = _one_line_error(
        *_import(capsys, "fourcastnet-v2-small", garbage, means, stds, tmp_path / "o.ckpt")
    )
    assert str(garbage) in line and "cannot read the weights" in line
    torch.save({"state_dict": {"w": torch.zeros(1)}}, garbage)
    line = _one_line_error(
        *_import(capsys, "fourcastnet-v2-small", garbage, means, stds, tmp_path / "o.ckpt")
    )
    assert "not a published checkpoint: no 'model_state' (found state_dict)" in line
    assert not (tmp_path / "o.ckpt").exists()


def test_a_pickle_that_would_run_code_is_refused_without_running_it(v2_files, tmp_path, capsys):
    weights, means, stds = v2_files
    marker = tmp_path / "code-ran"
    script = textwrap.dedent(
        f"""
        import torch
        class Payload:
            def __reduce__(self):
                return (open, ({str(marker)!r}, "w"))
        state = torch.load({str(weights)!r}, weights_only=True)["model_state"]
        torch.save({{"model_state": state, "extra": Payload()}}, {str(tmp_path / "evil.tar")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO)
    assert not marker.exists()
    line = _one_line_error(
        *_import(
            capsys, "fourcastnet-v2-small", tmp_path / "evil.tar", means, stds, tmp_path / "o.ckpt"
        )
    )
    assert "refusing to load: the file contains pickled objects that could execute code" in line
    assert not marker.exists()  # the payload's open() never ran
    assert not (tmp_path / "o.ckpt").exists()


def test_first_mismatch_is_named(v2_files, tmp_path, capsys):
    weights, means, stds = v2_files
    out = tmp_path / "o.ckpt"

    def reshaped(state):
        state["module.blocks.1.inner_skip.weight"] = torch.zeros(8, 8, 3, 3)

    line = _one_line_error(
        *_import(
            capsys,
            "fourcastnet-v2-small",
            _edited_state(weights, tmp_path, reshaped),
            means,
            stds,
            out,
            "--scale-factor",
            "2",
        )
    )
    assert (
        "key 'module.blocks.1.inner_skip.weight' has shape (8, 8, 3, 3), expected (8, 8, 1, 1)"
        in line
    )
    assert "embed_dim=8, num_layers=3" in line

    def extra(state):
        state["module.blocks.0.filter_layer.filter.w.7"] = torch.zeros(1)

    line = _one_line_error(
        *_import(
            capsys,
            "fourcastnet-v2-small",
            _edited_state(weights, tmp_path, extra),
            means,
            stds,
            out,
            "--scale-factor",
            "2",
        )
    )
    assert "unexpected key 'module.blocks.0.filter_layer.filter.w.7'" in line

    def missing(state):
        del state["module.blocks.2.norm1.bias"]

    line = _one_line_error(
        *_import(
            capsys,
            "fourcastnet-v2-small",
            _edited_state(weights, tmp_path, missing),
            means,
            stds,
            out,
            "--scale-factor",
            "2",
        )
    )
    assert "missing key 'module.blocks.2.norm1.bias'" in line
    assert not out.exists()


def test_published_buffers_and_unused_norm_are_accepted(v2_files, tmp_path, capsys):
    """Keys of the publisher's transform buffers (older torch-harmonics saved them) and its unused final norm."""
    weights, means, stds = v2_files

    def add(state):
        state["module.trans_down.weights"] = torch.zeros(5, 5, 9)
        state["module.itrans_up.pct"] = torch.zeros(5, 5, 9)
        state["module.norm.weight"] = torch.ones(8)

    edited = _edited_state(weights, tmp_path, add)
    code, _ = _import(
        capsys,
        "fourcastnet-v2-small",
        edited,
        means,
        stds,
        tmp_path / "o.ckpt",
        "--scale-factor",
        "2",
    )
    assert code == 0 and read_metadata(tmp_path / "o.ckpt")["model"] == "sfno-nonlinear"


def test_wrong_channel_counts(v1_files, tmp_path, capsys):
    v1_weights, means, stds = v1_files

    def shrink(state):
        state["module.patch_embed.proj.weight"] = torch.zeros(16, 23, 4, 4)

    line = _one_line_error(
        *_import(
            capsys,
            "fourcastnet",
            _edited_state(v1_weights, tmp_path, shrink),
            means,
            stds,
            tmp_path / "o.ckpt",
            "--grid",
            "9x16",
        )
    )
    assert (
        "the network takes 23 channels; FourCastNet v1 takes 20 (release 0.0) or 26 (release 0.1)"
        in line
    )
    # v1 weights are not v2-small weights
    line = _one_line_error(
        *_import(capsys, "fourcastnet-v2-small", v1_weights, means, stds, tmp_path / "o.ckpt")
    )
    assert "no key 'module.encoder.fwd.0.weight' in the weights" in line


def test_statistics_files(v1_files, tmp_path, capsys):
    weights, means, _ = v1_files
    bad = tmp_path / "global_stds.npy"
    np.save(bad, np.ones((1, 21)))
    line = _one_line_error(
        *_import(capsys, "fourcastnet", weights, means, bad, tmp_path / "o.ckpt", "--grid", "9x16")
    )
    assert str(bad) in line and "stds have shape (1, 21), expected (1, channel, 1, 1)" in line
    np.save(bad, np.ones((1, 12, 1, 1)))
    line = _one_line_error(
        *_import(capsys, "fourcastnet", weights, means, bad, tmp_path / "o.ckpt", "--grid", "9x16")
    )
    assert "stds cover 12 channels, the network has 20" in line
    np.save(bad, np.array([{"a": 1}], dtype=object))
    line = _one_line_error(
        *_import(capsys, "fourcastnet", weights, means, bad, tmp_path / "o.ckpt", "--grid", "9x16")
    )
    assert "cannot read the stds as a .npy array" in line
    np.save(bad, -np.ones((1, 21, 1, 1)))
    line = _one_line_error(
        *_import(capsys, "fourcastnet", weights, means, bad, tmp_path / "o.ckpt", "--grid", "9x16")
    )
    assert "std of channel u10m is not positive" in line


def test_grid_and_options(v1_files, tmp_path, capsys):
    weights, means, stds = v1_files
    line = _one_line_error(
        *_import(capsys, "fourcastnet", weights, means, stds, tmp_path / "o.ckpt")
    )
    assert "the positional embedding has 8 tokens; 720x1440" in line and "--grid" in line
    line = _one_line_error(
        *_import(
            capsys, "fourcastnet", weights, means, stds, tmp_path / "o.ckpt", "--scale-factor", "2"
        )
    )
    assert "--scale-factor does not apply to fourcastnet" in line
    code, _ = _import(
        capsys, "fourcastnet", weights, means, stds, tmp_path / "o.ckpt", "--grid", "9x16"
    )
    metadata = read_metadata(tmp_path / "o.ckpt")
    assert code == 0 and metadata["channels"] == list(CHANNELS_20)
    assert metadata["grid"] == {"kind": "equiangular", "nlat": 9, "nlon": 16}
    assert metadata["provenance"]["model_grid"] == "the 8 northernmost rows of equiangular 9x16"


def test_cli_flags_cover_every_importer_option():
    options = {option.name for importer in IMPORTERS.values() for option in importer.options}
    assert options == set(import_cli.OPTIONS)
    assert set(import_cli.MODELS) == set(IMPORTERS)
    for importer in IMPORTERS.values():
        for option in importer.options:
            text = import_cli.Config.model_fields[option.name].description
            assert f"publisher's default {option.default}" in text


def test_overwrite_replaces_only_our_checkpoints(v1_files, tmp_path, capsys):
    weights, means, stds = v1_files
    out = tmp_path / "fcn.ckpt"
    out.write_text("somebody's notes")
    line = _one_line_error(
        *_import(capsys, "fourcastnet", weights, means, stds, out, "--grid", "9x16")
    )
    assert "output exists" in line and "--overwrite" in line
    line = _one_line_error(
        *_import(capsys, "fourcastnet", weights, means, stds, out, "--grid", "9x16", "--overwrite")
    )
    assert "it is not a checkpoint written by forecast" in line
    assert out.read_text() == "somebody's notes"
    before = weights.read_bytes()
    line = _one_line_error(
        *_import(
            capsys, "fourcastnet", weights, means, stds, weights, "--grid", "9x16", "--overwrite"
        )
    )
    assert "--overwrite would delete an input of this command" in line
    assert weights.read_bytes() == before
    out.unlink()
    assert _import(capsys, "fourcastnet", weights, means, stds, out, "--grid", "9x16")[0] == 0
    assert (
        _import(capsys, "fourcastnet", weights, means, stds, out, "--grid", "9x16", "--overwrite")[
            0
        ]
        == 0
    )


def test_killed_import_leaves_the_old_checkpoint(v1_files, tmp_path, capsys):
    """SIGKILL in the middle of writing the new checkpoint: the old one is intact."""
    weights, means, stds = v1_files
    out = tmp_path / "fcn.ckpt"
    assert _import(capsys, "fourcastnet", weights, means, stds, out, "--grid", "9x16")[0] == 0
    before = checkpoint_digest(out)
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        real_save = torch.save
        def save_then_die(obj, f, *args, **kwargs):
            real_save(obj, f, *args, **kwargs)   # the temporary file is complete ...
            os.kill(os.getpid(), signal.SIGKILL) # ... and the process dies before the rename
        torch.save = save_then_die
        from forecast.cli.main import main
        main(["import", "fourcastnet", "--weights", {str(weights)!r}, "--means", {str(means)!r},
              "--stds", {str(stds)!r}, "--out", {str(out)!r}, "--grid", "9x16", "--overwrite",
              "--sparsity-threshold", "0.5", "--no-progress"])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, check=False)
    assert done.returncode == -signal.SIGKILL
    assert checkpoint_digest(out) == before
    assert read_metadata(out)["hparams"]["sparsity_threshold"] == 0.01
    assert os.path.exists(out)


def test_a_text_file_is_an_unreadable_checkpoint(tmp_path):
    """The weights-only unpickler fails on some bytes with an IndexError; that too is a one-line error."""
    from forecast.errors import CheckpointError

    notes = tmp_path / "notes.ckpt"
    notes.write_text("somebody's notes")
    with pytest.raises(
        CheckpointError, match="cannot read the checkpoint, the file is truncated or corrupt"
    ):
        read_metadata(notes)


def test_config_file_keys_mirror_the_flags(v1_files, tmp_path, capsys):
    weights, means, stds = v1_files
    config = tmp_path / "import.yaml"
    config.write_text(
        f"model: fourcastnet\nweights: {weights}\nmeans: {means}\nstds: {stds}\n"
        f"out: {tmp_path / 'fcn.ckpt'}\ngrid: 9x16\nsparsity-threshold: 0.02\nno-progress: true\n"
    )
    assert main(["import", "--config", str(config)]) == 0
    metadata = read_metadata(tmp_path / "fcn.ckpt")
    assert metadata["hparams"]["sparsity_threshold"] == 0.02
    assert metadata["provenance"]["not_in_weights"]["sparsity_threshold"] == 0.02
