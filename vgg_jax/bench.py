"""Timing VGG forward, forward-backward and train steps, done properly in JAX.

Compile first (lower plus compile, timed on its own), warm up, keep inputs on
the device, end every timed call in `jax.block_until_ready`, and report the
median and spread. FLOPs come from `count_macs` (the throughput figure) and from
XLA's `cost_analysis()`; MFU uses the datasheet peaks in `vgg_jax.hardware`.
`scripts/bench.py` is the command line over `main`.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import statistics
import sys
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vgg_jax import hardware, parallel, peers, train
from vgg_jax.configs import CONFIGS, MIN_IMAGE_SIZE, count_macs, resolve_config
from vgg_jax.model import COMPUTE_DTYPES, VGG, resolve_conv_impl

MODES = ("forward", "forward_backward", "train_step")
DTYPES = COMPUTE_DTYPES
ACCELERATOR_DEFAULTS = {"batch_size": 32, "steps": 100, "warmup": 10}  # the seed's
CPU_DEFAULTS = {"batch_size": 4, "steps": 5, "warmup": 1}
# XLA's cost_analysis() skips the zero-padded positions of SAME convs, so at 224
# pixels it counts about 3% fewer FLOPs than 2 x count_macs (the paper's count).
XLA_FLOPS_TOLERANCE = 0.05
MAX_IMAGE_SIZE, MAX_STEPS, MAX_BATCH, MAX_WIDTH = 8192, 10**7, 2**20, 2**20  # beyond these, a typo, not a benchmark
SEED_LABELS = {"forward": "Forward", "forward_backward": "Forward-backward", "train_step": "Train-step"}


class BenchError(Exception):
    """A user-facing failure: bad flags, or a batch that does not fit. One line, no traceback."""


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """What to benchmark. Sizes left as None take the backend's defaults."""

    configs: tuple[str, ...] = ("D",)
    batch_sizes: Optional[tuple[int, ...]] = None
    steps: Optional[int] = None
    warmup: Optional[int] = None
    image_size: int = 224
    dtypes: tuple[str, ...] = ("float32",)
    modes: tuple[str, ...] = ("forward", "forward_backward")
    vs_torch: bool = False
    vs_torch_compile: bool = False
    width_scale: float = 1.0
    fc_width: int = 4096
    num_classes: int = 1000
    peak_tflops: Optional[float] = None
    seed: int = 0
    conv_impl: str = "auto"
    remat: bool = False
    devices: Optional[int] = None  # all; the batch sizes are global, split over the devices
    scaling: bool = False  # also 1, 2, 4, ... devices at the same per-device batch


PEER_KINDS = {"torch": "vs_torch", "torch-compile": "vs_torch_compile"}


def parse_peers(text: Optional[str]) -> dict[str, bool]:
    """`--vs torch,torch-compile` as BenchSpec fields."""
    names = [] if text is None else [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PEER_KINDS]
    if unknown or (text is not None and not names):
        raise BenchError(f"--vs takes {', '.join(PEER_KINDS)} (comma-separated), got {text!r}")
    return {field: kind in names for kind, field in PEER_KINDS.items()}


def parse_configs(text: str) -> tuple[str, ...]:
    """'all', or comma-separated config names and aliases, as canonical names."""
    if text.strip().lower() == "all":
        return tuple(CONFIGS)
    names = [part for part in (p.strip() for p in text.split(",")) if part]
    if not names:
        raise BenchError("--config is empty; give a config such as D, several as A,D, or all")
    try:
        return tuple(dict.fromkeys(resolve_config(name) for name in names))
    except ValueError as error:
        raise BenchError(str(error)) from None


def parse_modes(text: str) -> tuple[str, ...]:
    """Comma-separated modes; '-' and '_' are interchangeable."""
    modes = [part.strip().replace("-", "_") for part in text.split(",") if part.strip()]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or not modes:
        raise BenchError(f"unknown --mode {','.join(unknown) or repr(text)}; choose from {', '.join(m.replace('_', '-') for m in MODES)}")
    return tuple(dict.fromkeys(modes))


def parse_dtypes(text: str) -> tuple[str, ...]:
    """Comma-separated compute dtypes (float32, bfloat16)."""
    dtypes = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [dtype for dtype in dtypes if dtype not in DTYPES]
    if unknown or not dtypes:
        raise BenchError(f"unknown --dtype {','.join(unknown) or repr(text)}; choose from {', '.join(DTYPES)}")
    return tuple(dict.fromkeys(dtypes))


def parse_positive_ints(text: str, flag: str) -> tuple[int, ...]:
    """Comma-separated positive integers, for sweeps such as --batch-size 1,8,32."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise BenchError(f"{flag} must be positive integers separated by commas, got {text!r}") from None
    if not values or any(value < 1 for value in values):
        raise BenchError(f"{flag} must be positive integers separated by commas, got {text!r}")
    return values


def check_spec(spec: BenchSpec) -> None:
    """Refuses a spec that cannot run, before anything is compiled."""
    if not MIN_IMAGE_SIZE <= spec.image_size <= MAX_IMAGE_SIZE:
        raise BenchError(f"--image-size must be between {MIN_IMAGE_SIZE} (five 2x2 pools) and {MAX_IMAGE_SIZE}, got {spec.image_size}")
    for flag, value, minimum in (("--steps", spec.steps, 1), ("--warmup", spec.warmup, 0)):
        if value is not None and not minimum <= value <= MAX_STEPS:
            raise BenchError(f"{flag} must be between {minimum} and {MAX_STEPS}, got {value}")
    if spec.batch_sizes is not None and any(not 1 <= b <= MAX_BATCH for b in spec.batch_sizes):
        raise BenchError(f"--batch-size must be between 1 and {MAX_BATCH}, got {spec.batch_sizes}")
    if spec.peak_tflops is not None and not (math.isfinite(spec.peak_tflops) and spec.peak_tflops > 0):
        raise BenchError(f"--peak-tflops must be a positive finite number, got {spec.peak_tflops}")
    for flag, value in (("--fc-width", spec.fc_width), ("--num-classes", spec.num_classes)):
        if not 1 <= value <= MAX_WIDTH:
            raise BenchError(f"{flag} must be between 1 and {MAX_WIDTH}, got {value}")
    if not (math.isfinite(spec.width_scale) and 0 < spec.width_scale <= 64):
        raise BenchError(f"--width-scale must be a positive finite number up to 64, got {spec.width_scale}")
    if spec.vs_torch or spec.vs_torch_compile:
        try:
            peers.check_torch()
        except peers.PeerUnavailable as error:
            raise BenchError(str(error)) from None


def resolve_sizes(spec: BenchSpec, backend: str) -> tuple[BenchSpec, Optional[str]]:
    """Fills unset sizes with the backend's defaults; returns a notice when CPU defaults apply."""
    defaults = CPU_DEFAULTS if backend == "cpu" else ACCELERATOR_DEFAULTS
    filled = dataclasses.replace(
        spec,
        batch_sizes=spec.batch_sizes or (defaults["batch_size"],),
        steps=spec.steps if spec.steps is not None else defaults["steps"],
        warmup=spec.warmup if spec.warmup is not None else defaults["warmup"],
    )
    unset = [flag for flag, value in (("--batch-size", spec.batch_sizes), ("--steps", spec.steps), ("--warmup", spec.warmup)) if value is None]
    notice = None
    if backend == "cpu" and unset:
        used = {"--batch-size": filled.batch_sizes[0], "--steps": filled.steps, "--warmup": filled.warmup}
        notice = (
            f"Running on CPU, so the CPU defaults apply: {' '.join(f'{flag} {used[flag]}' for flag in unset)} "
            "(the seed's accelerator defaults are 32 / 100 / 10); pass the flags to override."
        )
    return filled, notice


def step_function(model: VGG, mode: str, images: jax.Array, labels: jax.Array, params: Any, key: jax.Array):
    """The function a mode times, and its device-resident arguments.

    Returns (function, args, carries_state): when `carries_state`, the first
    argument is the train state, donated, and the first output replaces it.
    """
    if mode == "forward":

        def forward(params, images):
            return model.apply({"params": params}, images)

        return forward, (params, images), False

    if mode == "forward_backward":

        def l2_loss_of_fc8(params, images, key):  # the seed's objective, tf.nn.l2_loss(fc8)
            fc8 = model.apply({"params": params}, images, train=True, rngs={"dropout": key})
            return 0.5 * jnp.sum(jnp.square(fc8))

        return jax.grad(l2_loss_of_fc8), (params, images, key), False

    # The library's own train step: cross-entropy, SGD-momentum, metrics, state donated.
    optimizer = optax.sgd(1e-2, momentum=0.9)
    state = train.create_train_state(model, optimizer, {"params": params})
    return train.train_step_function(model, optimizer), (state, {"image": images, "label": labels}, key), True


class _Stepper:
    """Calls a compiled executable once per step and waits for its result."""

    def __init__(self, compiled: Callable, args: tuple, carries_state: bool):
        self.compiled, self.args, self.carries_state = compiled, list(args), carries_state

    def step(self) -> None:
        out = self.compiled(*self.args)
        jax.block_until_ready(out)
        if self.carries_state:
            self.args[0] = out[0]


def _time_interleaved(steppers: Sequence[Callable[[], None]], steps: int, progress: Optional[Callable[[], None]] = None) -> list[list[float]]:
    """Times `steps` calls of each stepper, alternating between them in rounds.

    Alternation spreads the machine's drift (other load, clocks) over every
    implementation instead of favouring whichever ran first.
    """
    rounds = min(steps, 10)
    bounds = np.linspace(0, steps, rounds + 1).astype(int)
    times: list[list[float]] = [[] for _ in steppers]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        for index, stepper in enumerate(steppers):
            for _ in range(stop - start):
                begin = time.perf_counter()
                stepper()
                times[index].append(time.perf_counter() - begin)
                if progress is not None and index == 0:
                    progress()
    return times


def _stats(times: Sequence[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "std_s": statistics.pstdev(times),
        "min_s": min(times),
    }


def _xla_flops(compiled: Any) -> Optional[float]:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # not every backend implements it
        return None
    if isinstance(cost, (list, tuple)):  # older jax returns one dict per program
        cost = cost[0] if cost else None
    flops = cost.get("flops") if cost else None
    return float(flops) if flops is not None and flops > 0 else None


def _memory(compiled: Any) -> dict[str, Optional[int]]:
    try:
        stats = compiled.memory_analysis()
    except Exception:
        stats = None

    def field(name: str) -> Optional[int]:
        value = getattr(stats, name, None)
        return int(value) if value is not None else None

    return {
        "argument_bytes": field("argument_size_in_bytes"),
        "output_bytes": field("output_size_in_bytes"),
        "temp_bytes": field("temp_size_in_bytes"),
        "peak_bytes": None,
    }


def _is_out_of_memory(error: Exception) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def dispatch_overhead(device: Any, steps: int = 50) -> float:
    """Median seconds of a trivial jitted call, timed like a step: the host's share of a step."""
    value = jax.device_put(jnp.zeros((), jnp.float32), device)
    compiled = jax.jit(lambda x: x + 1).lower(value).compile()
    stepper = _Stepper(compiled, (value,), False)
    for _ in range(3):
        stepper.step()
    return statistics.median(_time_interleaved([stepper.step], steps)[0])


def _seed_line(label: str, steps: int, stats: dict[str, float]) -> str:
    """The seed's summary line, kept so its users recognise it."""
    return f"{datetime.datetime.now()}: {label} across {steps} steps, {stats['mean_s']:.3f} +/- {stats['std_s']:.3f} sec / batch"


class _Progress:
    """A rich progress bar on stderr for runs long enough to want one; silent otherwise."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import Progress

        console = Console(stderr=True)
        self.enabled = console.is_terminal
        self.bar = Progress(console=console, transient=True, disable=not self.enabled)

    def task(self, description: str, total: int) -> Callable[[], None]:
        task_id = self.bar.add_task(description, total=total)
        return lambda: self.bar.advance(task_id)

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


def _model(spec: BenchSpec, config: str, dtype: str, remat: bool = False) -> VGG:
    return VGG(
        config=config, num_classes=spec.num_classes, fc_width=spec.fc_width, width_scale=spec.width_scale,
        dtype=DTYPES[dtype], conv_impl=spec.conv_impl, remat=remat,
    )


def init_params(spec: BenchSpec, config: str, device: Any) -> Any:
    """float32 parameters on the device; they do not depend on the batch or the compute dtype."""
    images = jnp.zeros((1, spec.image_size, spec.image_size, 3), jnp.float32)
    with jax.default_device(device):
        return jax.jit(_model(spec, config, "float32").init)(jax.random.key(spec.seed), images)["params"]


def benchmark_case(
    spec: BenchSpec,
    config: str,
    batch_size: int,
    dtype: str,
    mesh: Any,
    params: Any,
    dispatch_s: float,
    log: Callable[[str], None] = print,
    baseline: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """One record: every mode of one config, global batch and dtype on a mesh (see the README for the schema).

    `baseline` is the one-device record at the same per-device batch, for the
    scaling efficiency.
    """
    device = mesh.devices.flat[0]
    devices = mesh.devices.size
    info = hardware.device_info(device)
    model = _model(spec, config, dtype)
    image_key, label_key, dropout_key = jax.random.split(jax.random.key(spec.seed + 1), 3)
    shape = (batch_size, spec.image_size, spec.image_size, 3)
    with jax.default_device(device):
        images = 0.1 * jax.random.normal(image_key, shape, jnp.float32)  # the seed's N(0, 0.1)
        labels = jax.random.randint(label_key, (batch_size,), 0, spec.num_classes)
    macs = count_macs(config, spec.image_size, num_classes=spec.num_classes, fc_width=spec.fc_width, width_scale=spec.width_scale)
    peak, peak_name = (spec.peak_tflops, "--peak-tflops") if spec.peak_tflops else hardware.peak_tflops(info["device_kind"], dtype)

    results: dict[str, Any] = {}
    for mode in spec.modes:
        case = f"{config} batch {batch_size} {dtype} {mode.replace('_', '-')}" + (f" on {devices} devices" if devices > 1 else "")
        traces = [0]
        try:
            begin = time.perf_counter()
            ours, compiled, lower_s = _compile(model, mode, images, labels, params, dropout_key, traces, mesh)
            compile_s = time.perf_counter() - begin
            steppers = [ours.step]
            remat = None
            if spec.remat and mode != "forward":  # remat changes nothing without a backward pass
                begin = time.perf_counter()
                remat_stepper, remat_compiled, _ = _compile(
                    _model(spec, config, dtype, remat=True), mode, images, labels, params, dropout_key, [0], mesh
                )
                remat = {"compile_s": time.perf_counter() - begin, "compiled": remat_compiled}
                steppers.append(remat_stepper.step)
            peer_list = []
            wanted = [kind for kind, field in PEER_KINDS.items() if getattr(spec, field)]
            if wanted and devices > 1:
                log(f"  torchvision: skipped, it runs on one device and this case uses {devices}")
                wanted = []
            for kind in wanted:
                peer = _make_peer(spec, config, batch_size, dtype, mode, info["backend"], log, compile=kind == "torch-compile")
                if peer is not None:
                    peer_list.append((kind, peer))
                    steppers.append(peer.step)
            for _ in range(spec.warmup if spec.warmup else 0):
                for step in steppers:
                    step()
            if spec.vs_torch_compile and not spec.warmup:
                log("  note: torch.compile compiles in its first step; with --warmup 0 that is timed")
            with _Progress() as progress:
                advance = progress.task(case, spec.steps)
                timings = _time_interleaved(steppers, spec.steps, advance)
        except Exception as error:
            if _is_out_of_memory(error):
                raise BenchError(
                    f"{case} does not fit in device memory; try a smaller --batch-size (for example {max(1, batch_size // 2)})"
                ) from None
            raise
        stats = _stats(timings[0])
        analytic = 2.0 * macs * batch_size * (1 if mode == "forward" else 3)
        tflops = analytic / stats["median_s"] / 1e12
        memory = _memory(compiled)
        memory["peak_bytes"] = hardware.peak_bytes_in_use(device)
        result = {
            "compile_s": compile_s,
            "lower_s": lower_s,
            **stats,
            "images_per_s": batch_size / stats["median_s"],
            "flops_per_step": analytic,
            "flops_source": "count_macs (2 FLOPs per MAC, x3 for a backward pass)",
            "xla_flops_per_step": _xla_flops(compiled),
            "tflops_per_s": tflops,
            "peak_tflops": peak,
            "peak_source": peak_name,
            "mfu": tflops / (peak * devices) if peak else None,
            "images_per_s_per_device": batch_size / stats["median_s"] / devices,
            "memory": memory,
            "traces": traces[0],
            "steps": spec.steps,
            "warmup": spec.warmup,
        }
        log(_seed_line(SEED_LABELS[mode], spec.steps, stats))
        mfu_text = "n/a (unknown peak)" if result["mfu"] is None else f"{result['mfu']:.1%}"
        log(
            f"  {case}: median {stats['median_s']:.4f} s, min {stats['min_s']:.4f} s, {result['images_per_s']:.1f} img/s, "
            f"{tflops:.3f} TFLOP/s, MFU {mfu_text}, compile {compile_s:.2f} s"
        )
        timings = timings[1:]
        if remat is not None:
            remat_stats = _stats(timings.pop(0))
            remat_memory = _memory(remat["compiled"])
            result["remat"] = {
                "compile_s": remat["compile_s"],
                "median_s": remat_stats["median_s"],
                "images_per_s": batch_size / remat_stats["median_s"],
                "temp_bytes": remat_memory["temp_bytes"],
                "step_time_ratio": remat_stats["median_s"] / stats["median_s"],
            }
            before, after = memory["temp_bytes"], remat_memory["temp_bytes"]
            drop = "" if not before or after is None else f" ({after / before:.2f}x)"
            log(
                f"  remat=True: temp {_mib(before)} -> {_mib(after)} MiB{drop}, median {remat_stats['median_s']:.4f} s "
                f"({result['remat']['step_time_ratio']:.2f}x the step time), compile {remat['compile_s']:.2f} s"
            )
        for (kind, peer), peer_timings in zip(peer_list, timings):
            peer_stats = _stats(peer_timings)
            peer_rate = batch_size / peer_stats["median_s"]
            key = "peer" if kind == "torch" else "compiled_peer"
            result[key] = {"name": peer.name, "median_s": peer_stats["median_s"], "images_per_s": peer_rate}
            result["ratio" if kind == "torch" else "compiled_ratio"] = result["images_per_s"] / peer_rate
            log(
                f"  {peer.name}: {_seed_line(SEED_LABELS[mode], spec.steps, peer_stats).split(': ', 1)[1]}; "
                f"ours / peer = {result['images_per_s'] / peer_rate:.2f}x"
            )
        if baseline is not None and mode in baseline["results"]:
            one = baseline["results"][mode]["images_per_s"]
            result["scaling_efficiency"] = result["images_per_s"] / (devices * one)
            log(f"  scaling: {devices} devices x {batch_size // devices} images = {result['images_per_s']:.1f} img/s, "
                f"{result['images_per_s_per_device']:.1f} per device, efficiency {result['scaling_efficiency']:.1%} against 1 device")
        results[mode] = result

    return {
        "config": config,
        "batch_size": batch_size,
        "image_size": spec.image_size,
        "dtype": dtype,
        **info,
        "device_count": devices,
        "per_device_batch": batch_size // devices,
        "versions": hardware.versions(),
        "xla_flags": hardware.xla_flags(),
        "dispatch_s": dispatch_s,
        "width_scale": spec.width_scale,
        "conv_impl": resolve_conv_impl(spec.conv_impl),  # what ran: "auto" resolved
        "fc_width": spec.fc_width,
        "num_classes": spec.num_classes,
        "results": results,
    }


def _compile(
    model: VGG, mode: str, images: jax.Array, labels: jax.Array, params: Any, key: jax.Array, traces: list[int], mesh: Any
):
    """Lowers and compiles one mode's step on the mesh, explicit shardings: (stepper, compiled, lower seconds)."""
    function, args, carries_state = step_function(model, mode, images, labels, params, key)
    in_shardings, out_shardings = _shardings(mode, args, mesh)
    args = parallel.put(args, in_shardings)
    counted = jax.jit(
        _counting(function, traces), in_shardings=in_shardings, out_shardings=out_shardings,
        donate_argnums=(0,) if carries_state else (),
    )
    begin = time.perf_counter()
    lowered = counted.lower(*args)
    lower_s = time.perf_counter() - begin
    compiled = lowered.compile()
    return _Stepper(compiled, args, carries_state), compiled, lower_s


def _shardings(mode: str, args: tuple, mesh: Any) -> tuple[Any, Any]:
    """Data-parallel in and out shardings of a mode's arguments and outputs: batches split, the rest replicated."""
    whole, rows = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    if mode == "forward":
        return (whole, rows), rows
    if mode == "forward_backward":
        return (whole, rows, whole), whole
    state = parallel.state_sharding(args[0], mesh)
    return (state, {"image": rows, "label": rows}, whole), (state, whole)


def _mib(value: Optional[int]) -> str:
    return "?" if value is None else f"{value / 2**20:,.0f}"


def _counting(function: Callable, counter: list[int]) -> Callable:
    """Wraps a function so that each trace of it increments `counter[0]`."""

    def traced(*args):
        counter[0] += 1
        return function(*args)

    return traced


def _make_peer(
    spec: BenchSpec, config: str, batch_size: int, dtype: str, mode: str, backend: str, log: Callable[[str], None],
    compile: bool = False,
):
    if spec.width_scale != 1.0 or spec.fc_width != 4096:
        log("  torchvision: skipped, it has no --width-scale or --fc-width")
        return None
    try:
        return peers.TorchVisionPeer(
            config, batch_size, spec.image_size, dtype, mode, spec.num_classes, use_cuda=backend == "gpu", compile=compile
        )
    except peers.PeerUnavailable as error:
        log(f"  torchvision: skipped, {error}")
        return None


def run(spec: BenchSpec, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Benchmarks every config, batch size and dtype of `spec`; one record each (and per device count with `scaling`)."""
    check_spec(spec)
    try:
        mesh = parallel.make_mesh(spec.devices)
    except ValueError as error:
        raise BenchError(str(error)) from None
    device = mesh.devices.flat[0]
    spec, notice = resolve_sizes(spec, device.platform)
    if notice:
        log(notice)
    info = hardware.device_info(device)
    log(f"Device: {info['device_kind']} ({info['backend']}), jax {jax.__version__}, XLA_FLAGS={' '.join(hardware.xla_flags()) or '(none)'}")
    if (spec.vs_torch or spec.vs_torch_compile) and spec.image_size != 224:
        log("Note: torchvision pools to 7x7 before fc6, so its work equals ours only at --image-size 224.")
    dispatch_s = dispatch_overhead(device)
    log(f"Host dispatch of a trivial jitted call: {dispatch_s * 1e6:.0f} us per step")
    devices = mesh.devices.size
    if spec.scaling and jax.process_count() > 1:
        raise BenchError("--scaling compares against one device, so it runs in one process; run it on one host")
    for batch_size in spec.batch_sizes:
        try:
            parallel.check_global_batch(batch_size, mesh)
        except ValueError as error:
            raise BenchError(f"--batch-size: {error}") from None
    counts = _device_counts(devices) if spec.scaling else [devices]
    if spec.scaling:
        log(f"Scaling: {', '.join(map(str, counts))} devices at the same per-device batch")
    records = []
    for config in spec.configs:
        params = init_params(spec, config, device)
        for batch_size in spec.batch_sizes:
            for dtype in spec.dtypes:
                baseline = None
                for count in counts:
                    submesh = parallel.make_mesh(count) if count != devices else mesh
                    record = benchmark_case(
                        spec, config, batch_size // devices * count, dtype, submesh, params, dispatch_s, log,
                        baseline=baseline if count > 1 else None,
                    )
                    baseline = record if count == 1 else baseline
                    records.append(record)
        del params
    return records


def _device_counts(devices: int) -> list[int]:
    """1, 2, 4, ... below `devices`, then `devices`."""
    counts, count = [], 1
    while count < devices:
        counts.append(count)
        count *= 2
    return counts + [devices]


def main(args: Any) -> int:
    """The command line's work, from parsed arguments; returns the exit status.

    Bad input and a batch that does not fit end with one line on stderr and
    status 2, never a traceback.
    """
    from vgg_jax import report

    try:
        spec = BenchSpec(
            configs=parse_configs(args.config),
            batch_sizes=None if args.batch_size is None else parse_positive_ints(args.batch_size, "--batch-size"),
            steps=args.steps,
            warmup=args.warmup,
            image_size=args.image_size,
            dtypes=parse_dtypes(args.dtype),
            modes=parse_modes(args.mode),
            **parse_peers(args.vs),
            remat=args.remat,
            devices=args.devices,
            scaling=args.scaling,
            width_scale=args.width_scale,
            fc_width=args.fc_width,
            num_classes=args.num_classes,
            peak_tflops=args.peak_tflops,
            conv_impl=args.conv_impl,
        )
        check_spec(spec)
        for path, flag in ((args.json, "--json"), (args.plot, "--plot"), (args.cache_dir, "--cache-dir")):
            if path is not None and not path.strip():
                raise BenchError(f"{flag} needs a path, got an empty string")
        for path, flag in ((args.json, "--json"), (args.plot, "--plot")):
            if path:
                report.check_writable(path, flag)
        if args.plot:
            report.check_plot_available()
        if args.cache_dir:
            os.makedirs(args.cache_dir, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", args.cache_dir)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        records = run(spec)
    except (BenchError, ValueError, OSError) as error:
        print(f"bench.py: error: {error}", file=sys.stderr)
        return 2
    report.render_table(records)
    if args.json:
        report.write_json(records, args.json)
        print(f"Wrote {len(records)} records to {args.json}")
    if args.plot:
        report.write_plot(records, args.plot)
        print(f"Wrote the plot to {args.plot}")
    return 0
