"""FourCastNet v2-small at the published size: our imported model against the publisher's network.

Called by ``benchmarks/models.py --published fourcastnet-v2-small`` (see its
docstring and docs/performance.md). In one process: the publisher's
``FourierNeuralOperatorNet`` (PyPI ai-models-fourcastnetv2, its defaults: 721 x
1440, 73 channels, embed 256, 12 blocks, scale factor 6) with random weights,
saved in the published layout, imported by ``forecast.importers`` exactly as
``forecast import`` does; then batch-1 forwards of both, alternating, median
of ``repeats`` after a warm-up. On the CPU with one thread the time is the CPU
time of the computing thread (``time.thread_time``: other load on a shared
machine does not inflate it), otherwise wall time.

With ``--device cuda`` also: the bf16 (autocast) forward of both, and the time
of a 7-day forecast (28 steps of 6 h) through our rollout engine
(``inference.rollout.rollout``), fp32 and bf16.
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CHANNELS = 73
SHAPE = (721, 1440)
FORECAST_STEPS = 28  # 7 days of 6 h steps


def _models(device: str):
    """The reference network and our imported one, same random weights, on ``device``."""
    import numpy as np
    import torch

    from forecast.importers import convert_published
    from tests.forecast import fourcastnet_reference as reference

    torch.manual_seed(0)
    network = reference.randomize(reference.sfnonet().FourierNeuralOperatorNet(), seed=0)
    with tempfile.TemporaryDirectory(
        dir=REPO / "work" if (REPO / "work").is_dir() else None
    ) as folder:
        folder = Path(folder)
        weights = reference.save_published(network, folder / "weights.tar")
        means, stds = reference.save_statistics(np.zeros(CHANNELS), np.ones(CHANNELS), folder)
        stepper = convert_published("fourcastnet-v2-small", weights, means, stds).stepper
    return network.to(device).eval(), stepper.to(device).eval()


def _timer(device: str, threads: int):
    import time as _time

    import torch

    clock = _time.thread_time if device == "cpu" and threads == 1 else _time.perf_counter

    def timed(function) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = clock()
        function()
        if device == "cuda":
            torch.cuda.synchronize()
        return clock() - start

    return timed


def run(device: str = "cpu", threads: int = 1, repeats: int = 3) -> dict:
    """Measure; returns the numbers (seconds, ratios, relative differences, parameter counts)."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    network, stepper = _models(device)
    ours = stepper.model
    x = torch.randn(1, CHANNELS, *SHAPE, generator=torch.Generator().manual_seed(1)).to(device)
    timed = _timer(device, threads)
    result = {
        "device": device,
        "threads": threads,
        "repeats": repeats,
        "torch": torch.__version__,
        "parameters_ours": sum(p.numel() for p in ours.parameters()),
        "parameters_reference": sum(p.numel() for p in network.parameters()),
    }
    precisions = ("fp32", "bf16") if device == "cuda" else ("fp32",)
    for precision in precisions:

        def forward(model, precision=precision):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                return model(x)

        reference_out = forward(network).float()  # warm-up, and the values to compare
        ours_out = forward(ours).float()
        result[f"{precision}_relative_difference"] = float(
            (ours_out - reference_out).norm() / reference_out.norm()
        )
        del reference_out, ours_out
        gc.collect()
        times = {"ours": [], "reference": []}
        for _ in range(repeats):
            times["ours"].append(timed(lambda: forward(ours)))
            times["reference"].append(timed(lambda: forward(network)))
        for name, values in times.items():
            result[f"{precision}_forward_s_{name}"] = statistics.median(values)
        result[f"{precision}_ratio"] = (
            result[f"{precision}_forward_s_ours"] / result[f"{precision}_forward_s_reference"]
        )
    if device == "cuda":
        from inference.rollout import rollout

        del network
        gc.collect()
        torch.cuda.empty_cache()
        initial = x[:, None]
        times = np.asarray(["2020-01-01T00"], dtype="datetime64[ns]")
        for precision in precisions:

            def forecast(precision=precision):
                with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    for _ in rollout(stepper, initial, times, FORECAST_STEPS):
                        pass

            forecast()  # warm-up
            result[f"{precision}_7day_forecast_s"] = statistics.median(
                timed(forecast) for _ in range(repeats)
            )
        result["gpu"] = torch.cuda.get_device_name()
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def table(result: dict) -> str:
    """Markdown rows for docs/performance.md."""
    rows = [
        f"device {result['device']}, threads {result['threads']}, median of {result['repeats']}, "
        f"torch {result['torch']}; parameters ours {result['parameters_ours']:,}, "
        f"reference {result['parameters_reference']:,}",
        "",
        "| precision | forward s ours | reference | ratio | relative difference |",
        "| --- | --- | --- | --- | --- |",
    ]
    for precision in ("fp32", "bf16"):
        if f"{precision}_ratio" in result:
            rows.append(
                f"| {precision} | {result[f'{precision}_forward_s_ours']:.2f} | "
                f"{result[f'{precision}_forward_s_reference']:.2f} | {result[f'{precision}_ratio']:.2f} | "
                f"{result[f'{precision}_relative_difference']:.1e} |"
            )
    for precision in ("fp32", "bf16"):
        key = f"{precision}_7day_forecast_s"
        if key in result:
            rows.append(
                f"\n7-day forecast ({FORECAST_STEPS} steps), {precision}: {result[key]:.2f} s on {result['gpu']}"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    started = time.perf_counter()
    print(table(run()))
    print(f"({time.perf_counter() - started:.0f} s)")
