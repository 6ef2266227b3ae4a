"""Memory of stacking K checkpoints' networks: torch's copy against ours, which moves them.

Run by hand (results go in docs/performance.md, "Multi-checkpoint ensembles
stepped as one")::

    .venv/bin/python benchmarks/stacking_memory.py
    .venv/bin/python benchmarks/stacking_memory.py --networks 7 --embed-dim 256 --layers 8

Each measurement is a fresh process: it builds ``--networks`` random SFNOs
(12 channels, 32x64), then stacks their weights either with
:func:`torch.func.stack_module_state` (a second copy; what the stacked
ensemble did before) or with :func:`forecast.models.stacked.stack_in_place`
(each network's tensors become views of the stack), and reports the growth
of its resident memory from the stacking and, on a GPU (``--device cuda``),
of the memory torch has allocated. The two alternate ``--repeats`` times;
the medians are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = ("copy", "in-place")


def measure(method: str, networks: int, embed_dim: int, layers: int, device: str) -> dict:
    """In this process: bytes of the networks' weights and the memory growth from stacking them."""
    import gc

    import torch

    from forecast.grid import Grid
    from forecast.models import build_model
    from forecast.models.stacked import stack_in_place

    torch.set_num_threads(1)
    grid = Grid.equiangular(32, 64)
    built = []
    for seed in range(networks):
        torch.manual_seed(seed)
        model = build_model("sfno", 12, 12, grid, embed_dim=embed_dim, num_layers=layers)
        built.append(model.to(device).eval())
    weights = sum(t.numel() * t.element_size() for n in built for t in n.state_dict().values())

    def resident() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096

    def allocated() -> int:
        return torch.cuda.memory_allocated() if device.startswith("cuda") else 0

    gc.collect()
    rss, gpu = resident(), allocated()
    with torch.inference_mode():
        if method == "copy":
            held = torch.func.stack_module_state(built)
        else:
            held = stack_in_place(built)
    gc.collect()
    growth = {"rss_bytes": resident() - rss, "allocated_bytes": allocated() - gpu}
    del held
    return {"weights_bytes": weights, **growth}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--networks", type=int, default=7)
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args(argv)
    shape = (args.networks, args.embed_dim, args.layers, args.device)
    if args.one:
        print(json.dumps(measure(args.one, *shape)))
        return 0
    results: dict[str, list[dict]] = {method: [] for method in METHODS}
    for _ in range(args.repeats):
        for method in METHODS:
            options = ["--networks", str(args.networks), "--embed-dim", str(args.embed_dim)]
            options += ["--layers", str(args.layers), "--device", args.device, "--one", method]
            out = subprocess.run(
                [sys.executable, __file__, *options], check=True, capture_output=True, text=True
            ).stdout
            results[method].append(json.loads(out.strip().splitlines()[-1]))
    weights = results["copy"][0]["weights_bytes"]
    print(f"{args.networks} SFNOs (embed_dim {args.embed_dim}, {args.layers} layers) on "
          f"{args.device}: weights {weights / 1e6:.0f} MB")  # fmt: skip
    print("| stacking | RSS growth | allocated growth |\n| --- | ---: | ---: |")
    for method in METHODS:
        rss = statistics.median(r["rss_bytes"] for r in results[method])
        gpu = statistics.median(r["allocated_bytes"] for r in results[method])
        on_gpu = f"{gpu / 1e6:.0f} MB" if args.device.startswith("cuda") else "n/a (CPU)"
        print(f"| {method} | {rss / 1e6:.0f} MB ({rss / weights:.2f}x the weights) "
              f"| {on_gpu} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
