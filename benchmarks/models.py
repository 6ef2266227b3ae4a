"""Side-by-side benchmark of our backbones against reference implementations.

Forward + backward time and peak memory, batch 2, on CPU (and CUDA when
present), at 64x128 and 128x256, with the same hyperparameters:

- our SFNO against ``torch_harmonics.examples.models.SphericalFourierNeuralOperator``;
- our AFNO against physicsnemo's ``AFNO`` (PyPI ``nvidia-physicsnemo``, installed
  only in a separate benchmark environment; skipped with a message when absent).

Run by hand, from the repository root, with an interpreter that has both
(see docs/performance.md for how the benchmark environment is made)::

    work/.venv-bench/bin/python benchmarks/models.py [--threads 1] [--repeats 5] [--sizes 64x128,128x256]

With ``--published fourcastnet-v2-small`` it instead times the published
model at its size (721x1440, batch 1, forward only): our imported FourCastNet
v2-small against the publisher's network from ai-models-fourcastnetv2, in one
process; with ``--device cuda`` also bf16 and a 7-day (28-step) forecast
(see ``benchmarks/fourcastnet_v2.py``)::

    .venv/bin/python benchmarks/models.py --published fourcastnet-v2-small [--threads 1] [--repeats 3]
    .venv/bin/python benchmarks/models.py --published fourcastnet-v2-small --device cuda --threads 8

Each measurement runs in a fresh subprocess. Time: median of ``--repeats``
forward+backward passes after one warm-up, ours and the reference alternating
so that load on a shared machine hits both alike; on CPU with one thread it is
the CPU time of the computing thread (``time.thread_time``), which other
processes on the machine do not inflate, otherwise wall time. Memory on CPU:
growth of the process's peak resident set (``ru_maxrss``) over the first
forward+backward (activations, gradients, temporaries), with glibc's mmap
threshold fixed at 128 KiB so that freed tensors leave the resident set at
once; on CUDA: ``max_memory_allocated``.
Prints a Markdown table (paste it into docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout without installing the package
CHANNELS = 8
BATCH = 2
SFNO_HPARAMS = {"embed_dim": 64, "num_layers": 4, "scale_factor": 2, "mlp_ratio": 2.0}
AFNO_HPARAMS = {
    "patch_size": 4,
    "embed_dim": 128,
    "depth": 4,
    "num_blocks": 8,
    "mlp_ratio": 4.0,
    "sparsity_threshold": 0.01,
}


def build(kind: str, nlat: int, nlon: int):
    """Build one model: ``kind`` in ``ours-sfno``, ``ref-sfno``, ``ours-afno``, ``ref-afno``."""
    import torch  # noqa: F401

    if kind == "ours-sfno":
        from forecast.grid import Grid
        from forecast.models import build_model

        grid = Grid.equiangular(nlat, nlon)
        return build_model(
            "sfno",
            CHANNELS,
            CHANNELS,
            grid,
            **SFNO_HPARAMS,
            inner_grid="legendre-gauss",
            encoder_layers=0,
            normalization="none",
            inner_skip="none",
            outer_skip="identity",
        )
    if kind == "ref-sfno":
        from torch_harmonics.examples.models import SphericalFourierNeuralOperator

        return SphericalFourierNeuralOperator(
            img_size=(nlat, nlon),
            grid="equiangular",
            grid_internal="legendre-gauss",
            scale_factor=SFNO_HPARAMS["scale_factor"],
            in_chans=CHANNELS,
            out_chans=CHANNELS,
            embed_dim=SFNO_HPARAMS["embed_dim"],
            num_layers=SFNO_HPARAMS["num_layers"],
            mlp_ratio=SFNO_HPARAMS["mlp_ratio"],
            normalization_layer="none",
            pos_embed="none",
        )
    if kind == "ours-afno":
        from forecast.grid import Grid
        from forecast.models import build_model

        return build_model(
            "afno", CHANNELS, CHANNELS, Grid("regional", _lat(nlat), _lon(nlon)), **AFNO_HPARAMS
        )
    if kind == "ref-afno":
        from physicsnemo.models.afno import AFNO

        patch = AFNO_HPARAMS["patch_size"]
        return AFNO(
            inp_shape=[nlat, nlon],
            in_channels=CHANNELS,
            out_channels=CHANNELS,
            patch_size=[patch, patch],
            embed_dim=AFNO_HPARAMS["embed_dim"],
            depth=AFNO_HPARAMS["depth"],
            mlp_ratio=AFNO_HPARAMS["mlp_ratio"],
            num_blocks=AFNO_HPARAMS["num_blocks"],
            sparsity_threshold=AFNO_HPARAMS["sparsity_threshold"],
        )
    raise ValueError(kind)


def _lat(nlat: int):
    import numpy as np

    return 90.0 - 180.0 * (np.arange(nlat) + 0.5) / nlat


def _lon(nlon: int):
    import numpy as np

    return 360.0 * np.arange(nlon) / nlon


def _step(model, x):
    model(x).square().mean().backward()


def measure_memory(kind: str, nlat: int, nlon: int, device: str, threads: int) -> dict:
    """Peak memory of the first forward+backward, in MiB (runs in its own process)."""
    import resource

    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(kind, nlat, nlon).to(device)
    x = torch.randn(BATCH, CHANNELS, nlat, nlon, device=device)
    parameters = sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _step(model, x)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        _step(model, x)
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    return {"peak_mib": peak / 2**20, "parameters": parameters}


def measure_time(
    kinds: list[str], nlat: int, nlon: int, device: str, threads: int, repeats: int
) -> dict:
    """Median forward+backward seconds of each model, alternating between them."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    models = {kind: build(kind, nlat, nlon).to(device) for kind in kinds}
    x = torch.randn(BATCH, CHANNELS, nlat, nlon, device=device)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    # one intra-op thread computes on this thread: its CPU time ignores other load on a shared machine
    clock = time.thread_time if device == "cpu" and threads == 1 else time.perf_counter
    for kind in kinds:  # warm-up
        _step(models[kind], x)
    for _ in range(repeats):
        for kind in kinds:
            models[kind].zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            start = clock()
            _step(models[kind], x)
            if device == "cuda":
                torch.cuda.synchronize()
            times[kind].append(clock() - start)
    return {kind: statistics.median(values) for kind, values in times.items()}


def _child(task: dict) -> dict:
    command = [sys.executable, __file__, "--child", json.dumps(task)]
    # a fixed mmap threshold makes every tensor above 128 KiB its own mapping, returned on free,
    # so the peak resident set follows the peak of live tensors (glibc otherwise raises it dynamically)
    environment = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, check=False, env=environment
    )
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def reference_available(kind: str) -> str | None:
    """None when the reference of ``kind`` imports, else the reason."""
    module = {"sfno": "torch_harmonics.examples.models", "afno": "physicsnemo.models.afno"}[kind]
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if done.returncode == 0:
        return None
    return (done.stderr.strip().splitlines() or ["import failed"])[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64x128,128x256")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", default="sfno,afno")
    parser.add_argument(
        "--published",
        choices=["fourcastnet-v2-small"],
        help="time the published model at its size instead (our import against the publisher's network)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.published:
        from benchmarks import fourcastnet_v2

        repeats = args.repeats if "--repeats" in (argv or sys.argv) else 3
        print(fourcastnet_v2.table(fourcastnet_v2.run(args.device, args.threads, repeats)))
        return
    if args.child:
        task = json.loads(args.child)
        if task["what"] == "memory":
            result = measure_memory(
                task["kind"], task["nlat"], task["nlon"], task["device"], task["threads"]
            )
        else:
            result = measure_time(
                task["kinds"],
                task["nlat"],
                task["nlon"],
                task["device"],
                task["threads"],
                task["repeats"],
            )
        print(json.dumps(result))
        return

    rows = []
    for family in args.models.split(","):
        missing = reference_available(family)
        reference_name = {"sfno": "torch-harmonics example SFNO", "afno": "physicsnemo AFNO"}[
            family
        ]
        if missing:
            print(
                f"skipping {family}: reference {reference_name} cannot be imported ({missing}); see docs/performance.md",
                file=sys.stderr,
            )
            continue
        for size in args.sizes.split(","):
            nlat, nlon = (int(v) for v in size.split("x"))
            ours, ref = f"ours-{family}", f"ref-{family}"
            base = {"nlat": nlat, "nlon": nlon, "device": args.device, "threads": args.threads}
            timing = _child({"what": "time", "kinds": [ours, ref], "repeats": args.repeats, **base})
            memory = {
                kind: _child({"what": "memory", "kind": kind, **base}) for kind in (ours, ref)
            }
            for item in (timing, *memory.values()):
                if "error" in item:
                    raise SystemExit(f"{family} {size}: {item['error']}")
            rows.append(
                (
                    family.upper(),
                    size,
                    memory[ours]["parameters"],
                    memory[ref]["parameters"],
                    timing[ours],
                    timing[ref],
                    memory[ours]["peak_mib"],
                    memory[ref]["peak_mib"],
                )
            )
            print(f"done {family} {size}", file=sys.stderr)
    import torch

    print(
        f"\ndevice {args.device}, threads {args.threads}, batch {BATCH}, channels {CHANNELS}, torch {torch.__version__}"
    )
    print(f"SFNO {SFNO_HPARAMS}; AFNO {AFNO_HPARAMS}\n")
    print(
        "| model | grid | params ours / ref | fwd+bwd s ours | ref | ratio | peak MiB ours | ref | ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for family, size, p_ours, p_ref, t_ours, t_ref, m_ours, m_ref in rows:
        print(
            f"| {family} | {size} | {p_ours:,} / {p_ref:,} | {t_ours:.3f} | {t_ref:.3f} | {t_ours / t_ref:.2f} | "
            f"{m_ours:.0f} | {m_ref:.0f} | {m_ours / m_ref:.2f} |"
        )


if __name__ == "__main__":
    main()
