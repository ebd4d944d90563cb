"""Benchmark LiteNeXt against its peers in one process: latency, memory, folder inference, training.

Every timing is the median over ``runs`` calls, repeated in ``rounds`` interleaved rounds (model
A, B, C, … then again A, B, C, …) and reduced to the median of the round medians, so that load
from other processes on a shared machine hits all models alike; each figure is reported with
its ratio to MONAI's UNet (16-256, 2 residual units) measured in the same run.

``scripts/benchmark.py`` is the command line; the functions here are what it composes.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = [
    "REFERENCE",
    "Row",
    "PeakActivationMemory",
    "peer_models",
    "peak_activation_bytes",
    "interleaved_medians",
    "format_table",
    "run_benchmark",
]

#: The model every figure is compared with.
REFERENCE = "MONAI UNet 16-256 res2"


@dataclasses.dataclass
class Row:
    """One model's figures; ``None`` where a figure was not measured for it."""

    name: str
    params: int
    values: dict[str, float | None] = dataclasses.field(default_factory=dict)


def _monai_peers() -> dict[str, Callable[[], nn.Module]]:
    from monai.networks.nets import AttentionUnet, BasicUNet, UNet

    return {
        REFERENCE: lambda: UNet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2),
        "MONAI BasicUNet": lambda: BasicUNet(spatial_dims=2, in_channels=3, out_channels=1),
        "MONAI AttentionUnet": lambda: AttentionUnet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2)),
    }


def peer_models() -> tuple[dict[str, Callable[[], nn.Module]], list[str]]:
    """Factories of every benchmarked model (eval mode, deploy form where one exists) and skip notes.

    The seed baselines (CMUNeXtXXS, MiniNet, LVUNet in its deploy form) are included when
    ``litenext_monai.networks`` provides them; otherwise a note says why they were skipped.
    """
    from litenext_monai import networks
    from litenext_monai.networks import LiteNeXt, reparameterize

    models: dict[str, Callable[[], nn.Module]] = {
        "LiteNeXt deploy form": lambda: reparameterize(LiteNeXt().eval()),
        "LiteNeXt training form": lambda: LiteNeXt().eval(),
        "LiteNeXt paper order": lambda: LiteNeXt(fused_decoder=False).eval(),
    }
    models.update(_monai_peers())
    notes: list[str] = []
    for label, attr in (
        ("CMUNeXt-XXS", "CMUNeXtXXS"),
        ("MiniNet", "MiniNet"),
        ("LV-UNet deploy form", "LVUNet"),
    ):
        cls = getattr(networks, attr, None)
        if cls is None:
            notes.append(f"{label}: skipped, litenext_monai.networks has no {attr}")
            continue
        try:
            cls(spatial_dims=2, in_channels=3, out_channels=1)
        except Exception as err:  # a baseline under construction must not stop the benchmark
            notes.append(f"{label}: skipped, {attr}(in_channels=3, out_channels=1) failed: {err}")
            continue
        models[label] = lambda cls=cls: reparameterize(
            cls(spatial_dims=2, in_channels=3, out_channels=1).eval()
        )
    return models, notes


class PeakActivationMemory(TorchDispatchMode):
    """Peak bytes of live tensor storage created inside the mode (activations; not inputs or weights).

    Every storage produced by an ATen operator is counted from its creation until its last
    reference is gone (a ``weakref.finalize`` on the storage object), like ``tracemalloc`` for
    tensors. Views and in-place results share their storage and are not counted twice.
    Allocator caches and library workspaces (oneDNN scratch pads) are not tensors and are not
    counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or key in self._seen:
                continue
            self._seen.add(key)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._release, key, nbytes)
        return out


def peak_activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Peak live activation bytes of one inference forward pass of ``model`` on ``x``."""
    with torch.inference_mode():
        model(x)  # first-call initialisation (oneDNN, lazy buffers) is not the model's activations
        with PeakActivationMemory() as tracker:
            out = model(x)
            del out
    return tracker.peak


#: Clocks of :func:`interleaved_medians`: wall time, or this process's CPU time (all threads),
#: which on a loaded machine excludes the time the process waits for a core; with one thread it
#: is the least noisy measure there.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def _median_call(step: Callable[[], Any], runs: int, sync: Callable[[], None], clock: str) -> float:
    now = CLOCKS[clock]
    times = []
    for _ in range(runs):
        start = now()
        step()
        sync()
        times.append(now() - start)
    return statistics.median(times)


def interleaved_medians(
    steps: Mapping[str, Callable[[], Any]],
    rounds: int,
    runs: int,
    warmup: int,
    sync: Callable[[], None] = lambda: None,
    clock: str = "wall",
) -> dict[str, float]:
    """Seconds per call of every step: the median over ``rounds`` interleaved rounds of per-round medians."""
    for step in steps.values():
        for _ in range(warmup):
            step()
        sync()
    per_round: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            per_round[name].append(_median_call(step, runs, sync, clock))
    return {name: statistics.median(values) for name, values in per_round.items()}


def format_table(
    rows: Sequence[Row], columns: Sequence[tuple[str, str, str]], reference: str = REFERENCE
) -> str:
    """Markdown table: one row per model, every column followed by its ratio to ``reference``.

    Args:
        rows: the models' figures.
        columns: ``(key, header, format)`` per figure, e.g. ``("b1_ms", "batch 1 (ms)", "{:.1f}")``.
        reference: name of the row the ratios divide by; a ratio is ``–`` when either value is missing.
    """
    ref = next((row for row in rows if row.name == reference), None)
    header = ["model", "params"]
    for _, title, _ in columns:
        header += [title, "× UNet"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row in rows:
        cells = [row.name, f"{row.params:,}"]
        for key, _, fmt in columns:
            value = row.values.get(key)
            ref_value = ref.values.get(key) if ref is not None else None
            cells.append("–" if value is None else fmt.format(value))
            cells.append("–" if value is None or not ref_value else f"{value / ref_value:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _infer(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    def step() -> None:
        with torch.inference_mode():
            model(x)

    return step


def _onnx_session(model: nn.Module, x: torch.Tensor, path: Path, threads: int):
    import onnxruntime as ort

    with torch.no_grad():
        torch.onnx.export(model, (x,), str(path), opset_version=17, dynamo=False, input_names=["image"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"image": x.numpy()}
    return lambda: session.run(None, feed)


def _write_png_folder(folder: Path, count: int, size: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"image_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def folder_inference_step(
    model: nn.Module, paths: Sequence[Path], out_dir: Path, size: int
) -> Callable[[], Any]:
    """Segment every PNG of ``paths`` in-process as the inference bundle does and write PNG masks.

    Uses :class:`~litenext_monai.inference.predictor.Predictor` (the bundle's load, resize,
    network, invert-resize, sigmoid and threshold) and the bundle's PNG mask writer.
    """
    from litenext_monai.inference.predictor import Predictor
    from litenext_monai.io import write_mask_png

    settings = {"in_channels": 3, "image_size": [size, size], "modality": "rgb", "threshold": 0.5}
    predictor = Predictor(model, settings)

    def step() -> None:
        for path in paths:
            (mask,) = predictor.predict(path)
            write_mask_png(mask, out_dir / path.name)

    return step


def training_step(net: nn.Module, batch: int, size: int, serp: bool) -> Callable[[], None]:
    """One optimiser step of Algorithm 2 (``serp``) or MWL + Dice, weight maps from the "data loader".

    The bundle's training module: :class:`~litenext_monai.networks.SeRPNetwork` around ``net`` with
    the ``ema_model`` of Ignite's ``EMAHandler`` as the target encoder, and that handler's update
    (``φ ← (1 − m)·φ + m·θ``) after the step.
    """
    from ignite.handlers import EMAHandler

    from litenext_monai.losses import LiteNeXtLoss, marginal_weight_map
    from litenext_monai.networks import SeRPNetwork

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=gen)
    weak = torch.rand(batch, 3, size, size, generator=gen)
    y = (torch.rand(batch, 1, size, size, generator=gen) > 0.5).float()
    weight_map = marginal_weight_map(y)
    ema = EMAHandler(net.encoder, momentum=0.01)
    module = SeRPNetwork(net, ema.ema_model) if serp else net
    optimizer = torch.optim.NAdam([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = LiteNeXtLoss(serp_weight=1.0 if serp else 0.0)
    target, online = list(ema.ema_model.parameters()), list(net.encoder.parameters())
    module.train()

    def step() -> None:
        out = module(x, weak=weak) if serp else {"pred": module(x)}
        loss = loss_fn(out.pop("pred"), y, weight_map=weight_map, **out)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if serp:
            with torch.no_grad():
                torch._foreach_lerp_(target, online, ema.momentum)

    return step


def data_pipeline_step(size: int) -> Callable[[], None]:
    """DualViewd + MarginalWeightMapd on one 3×size² sample, as a data-loader worker runs them."""
    from monai.transforms import Compose

    from litenext_monai.transforms import DualViewd, MarginalWeightMapd

    rng = np.random.default_rng(0)
    sample = {
        "image": rng.random((3, size, size), dtype=np.float32),
        "label": (rng.random((1, size, size)) > 0.5).astype(np.float32),
    }
    pipeline = Compose([DualViewd(keys=("image", "label")), MarginalWeightMapd(keys="label")])
    pipeline.set_random_state(0)
    return lambda: pipeline(dict(sample))


def run_benchmark(
    size: int = 256,
    threads: int = 2,
    rounds: int = 3,
    runs: int = 10,
    warmup: int = 3,
    folder_images: int = 16,
    train_batch: int = 8,
    train_rounds: int = 3,
    skip_training: bool = False,
    clock: str = "wall",
    log: Callable[[str], None] = print,
) -> str:
    """Run every measurement and return the report (Markdown tables and notes)."""
    from litenext_monai.networks import count_parameters

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    factories, notes = peer_models()
    models = {name: factory() for name, factory in factories.items()}
    rows = {name: Row(name, count_parameters(model)) for name, model in models.items()}
    x1, x8 = torch.rand(1, 3, size, size), torch.rand(8, 3, size, size)
    report = [
        f"CPU, {size}×{size}, {threads} threads, torch {torch.__version__}, {clock} clock; medians of "
        f"{rounds} interleaved rounds of {runs} calls each."
    ]

    log("latency, batch 1 and 8 …")
    steps = {}
    for name, model in models.items():
        steps[(name, "b1_ms")] = _infer(model, x1)
        steps[(name, "b8_ms")] = _infer(model, x8)
    for (name, key), seconds in interleaved_medians(steps, rounds, runs, warmup, clock=clock).items():
        rows[name].values[key] = seconds * 1e3
        if key == "b8_ms":
            rows[name].values["img_s"] = 8.0 / seconds

    log("peak activation memory …")
    for name, model in models.items():
        rows[name].values["peak_mib"] = peak_activation_bytes(model, x1) / 2**20

    log("ONNX Runtime …")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            onnx_steps = {
                name: _onnx_session(models[name], x1, Path(tmp) / f"{i}.onnx", threads)
                for i, name in enumerate(("LiteNeXt deploy form", REFERENCE))
            }
            for name, seconds in interleaved_medians(onnx_steps, rounds, runs, warmup, clock=clock).items():
                rows[name].values["ort_ms"] = seconds * 1e3
        except ImportError as err:
            notes.append(f"ONNX Runtime: skipped ({err})")

    log("folder inference …")
    folder_names = ("LiteNeXt deploy form", REFERENCE)
    with tempfile.TemporaryDirectory() as tmp:
        images, masks = Path(tmp) / "images", Path(tmp) / "masks"
        images.mkdir()
        masks.mkdir()
        paths = _write_png_folder(images, folder_images, size)
        folder_steps = {
            name: folder_inference_step(models[name], paths, masks, size) for name in folder_names
        }
        pure_steps = {name: _infer(models[name], x1) for name in folder_names}
        both = {
            **{("folder", n): s for n, s in folder_steps.items()},
            **{("pure", n): s for n, s in pure_steps.items()},
        }
        timed = interleaved_medians(both, rounds, max(1, runs // 3), 1, clock=clock)
        for name in folder_names:
            folder_img_s = folder_images / timed[("folder", name)]
            pure_img_s = 1.0 / timed[("pure", name)]
            rows[name].values["folder_img_s"] = folder_img_s
            rows[name].values["folder_frac"] = folder_img_s / pure_img_s

    columns = [
        ("b1_ms", "batch 1 (ms)", "{:.1f}"),
        ("b8_ms", "batch 8 (ms)", "{:.1f}"),
        ("img_s", "batch 8 (img/s)", "{:.1f}"),
        ("peak_mib", "peak activations b1 (MiB)", "{:.1f}"),
        ("ort_ms", "ONNX Runtime b1 (ms)", "{:.1f}"),
        ("folder_img_s", "folder inference (img/s)", "{:.1f}"),
        ("folder_frac", "folder / pure-model img/s", "{:.2f}"),
    ]
    report += ["", format_table(list(rows.values()), columns)]

    if torch.cuda.is_available():
        log("GPU latency …")
        device = torch.device("cuda")
        gpu_rows = []
        gpu_steps = {}
        for name, model in models.items():
            gpu_model = model.to(device)
            gpu_steps[(name, "gpu_b1_ms")] = _infer(gpu_model, x1.to(device))
            gpu_steps[(name, "gpu_b8_ms")] = _infer(gpu_model, x8.to(device))
        timed = interleaved_medians(gpu_steps, rounds, runs, warmup, sync=torch.cuda.synchronize)
        for name in models:
            row = Row(name, rows[name].params)
            row.values = {key: timed[(name, key)] * 1e3 for key in ("gpu_b1_ms", "gpu_b8_ms")}
            gpu_rows.append(row)
        report += [
            "",
            f"GPU ({torch.cuda.get_device_name()}), synchronised latency:",
            "",
            format_table(
                gpu_rows, [("gpu_b1_ms", "batch 1 (ms)", "{:.2f}"), ("gpu_b8_ms", "batch 8 (ms)", "{:.2f}")]
            ),
        ]

    if not skip_training:
        log("training …")
        report += ["", _training_report(size, train_batch, train_rounds, clock)]
    report += ["", "Notes:"] + [f"- {note}" for note in notes]
    return "\n".join(report)


def _training_report(size: int, batch: int, rounds: int, clock: str = "wall") -> str:
    from litenext_monai.networks import LiteNeXt

    steps = {}
    for serp in (False, True):
        torch.manual_seed(0)
        steps[serp] = training_step(LiteNeXt(), batch, size, serp)
    steps["data"] = data_pipeline_step(size)
    timed = interleaved_medians(steps, rounds, 2, 1, clock=clock)
    plain, serp = timed[False] / batch * 1e3, timed[True] / batch * 1e3
    return "\n".join(
        [
            f"Training step, batch {batch}, {size}×{size} (weight maps precomputed as the data loader does):",
            "",
            "| model | MWL + Dice (ms/img) | SeRP + MWL + Dice (ms/img) | SeRP overhead |",
            "|---|---:|---:|---:|",
            f"| LiteNeXt | {plain:.1f} | {serp:.1f} | {serp / plain - 1:+.1%} |",
            "",
            f"Data side: DualViewd + MarginalWeightMapd, {timed['data'] * 1e3:.1f} ms per sample.",
        ]
    )
