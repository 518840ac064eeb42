"""Timing VGG forward, forward-backward and train steps, done properly in JAX.

Compile first (lower plus compile, timed on its own), warm up, keep inputs on
the device, end every timed call in `jax.block_until_ready`, and report the
median and spread. FLOPs come from `count_macs` (the throughput figure) and from
XLA's `cost_analysis()`; MFU uses the datasheet peaks in `vgg_jax.benchmark.hardware`.
`scripts/bench.py` builds a `BenchConfig` from its flags and calls `execute`;
the timing primitives are in `vgg_jax.benchmark.timing`.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import re
import time
from typing import Annotated, Any, Callable, Optional

import jax
import jax.numpy as jnp
import tyro

from vgg_jax.benchmark import device_profile, hardware, peers, timing
from vgg_jax.model.configs import CONFIGS, MIN_IMAGE_SIZE, frozen_layers, layer_macs, resolve_config
from vgg_jax.model.vgg import (
    COMPUTE_DTYPES,
    VGG,
    ModelConfig,
    model_from,
    resolve_conv_impl,
    resolve_pool_impl,
)
from vgg_jax.training import parallel
from vgg_jax.training import step as train
from vgg_jax.training.config import TrainConfig, make_train_step
from vgg_jax.util.options import FieldError, comma, flag, positive

MODES = ("forward", "forward_backward", "train_step")
ACCELERATOR_DEFAULTS = {"batch_size": 32, "steps": 100, "warmup": 10}  # the original TF1 benchmark's
CPU_DEFAULTS = {"batch_size": 4, "steps": 5, "warmup": 1}
# XLA's cost_analysis() skips the zero-padded positions of SAME convs, so at 224
# pixels it counts about 3% fewer FLOPs than 2 x count_macs (the paper's count).
XLA_FLOPS_TOLERANCE = 0.05
# beyond these, a typo, not a benchmark
MAX_IMAGE_SIZE, MAX_STEPS, MAX_BATCH, MAX_DEVICES = 8192, 10**7, 2**20, 2**20
MODE_MEANINGS = {  # the header says what each timed mode computes
    "forward": "forward: inference logits, no dropout",
    "forward_backward": "forward-backward: the gradient of l2_loss(fc8) = sum(fc8**2)/2 with respect to the "
    "parameters, dropout on (the original benchmark's objective)",
    "train_step": "train-step: train.py's step (cross-entropy, the paper's SGD, state donated)",
}
SEED_LABELS = {"forward": "Forward", "forward_backward": "Forward-backward", "train_step": "Train-step"}


class BenchError(ValueError):
    """A user-facing failure: bad flags, or a batch that does not fit. One line, no traceback."""


class BenchFieldError(BenchError, FieldError):
    """A `BenchSpec` or `BenchConfig` field's bad value: `field` names it (the command puts its flag)."""


def _mode(text: str) -> str:
    return text.strip().lower().replace("-", "_")


def _config(text: str) -> str:
    return resolve_config(text.strip())


PEERS = ("torch", "torch-compile")  # torchvision eager, and under torch.compile


def _backend_default(key: str, help: str, **arg: Any) -> Any:
    """A size flag whose default is the backend's (`ACCELERATOR_DEFAULTS`, `CPU_DEFAULTS`): both shown."""
    hint = f"(default {ACCELERATOR_DEFAULTS[key]}; CPU {CPU_DEFAULTS[key]})"
    return tyro.conf.arg(help=help, help_behavior_hint=hint, **arg)


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """What to benchmark; one field per `scripts/bench.py` flag, VGG's settings held whole in `model` (their
    flags without a prefix). Sizes left as None take the backend's defaults."""

    configs: Annotated[
        tuple[str, ...],
        comma("CONFIG[,CONFIG]", _config, choices=tuple(CONFIGS), every=tuple(CONFIGS)),
        tyro.conf.arg(name="config", aliases=("--configs",)),
    ] = ("D",)
    """configs or aliases (vgg16), comma-separated, or all"""
    batch_sizes: Annotated[
        Optional[tuple[int, ...]],
        comma("N[,N]", positive),
        _backend_default(
            "batch_size",
            "global batch size (split over the devices), or a comma-separated sweep",
            name="batch-size",
            aliases=("--batch-sizes",),
        ),
    ] = None
    steps: Annotated[Optional[int], _backend_default("steps", "timed steps")] = None
    warmup: Annotated[Optional[int], _backend_default("warmup", "untimed steps after compiling")] = None
    image_size: int = 224
    """square image size in pixels"""
    dtypes: Annotated[
        tuple[str, ...],
        comma("DTYPE[,DTYPE]", str.lower, choices=tuple(COMPUTE_DTYPES)),
        tyro.conf.arg(name="dtype", aliases=("--dtypes",)),
    ] = ("float32",)
    """compute dtypes, comma-separated"""
    modes: Annotated[
        tuple[str, ...],
        comma("MODE[,MODE]", _mode, choices=MODES),
        tyro.conf.arg(name="mode", aliases=("--modes",)),
    ] = ("forward", "forward_backward")
    """what to time, comma-separated (- or _ alike)"""
    peers: Annotated[
        tuple[str, ...],
        comma("PEER[,PEER]", str.lower, choices=PEERS),
        tyro.conf.arg(name="vs", aliases=("--peers",)),
    ] = ()
    """also time torchvision in the same run, eager (torch) or compiled (torch-compile), comma-separated"""
    num_classes: int = 1000
    """outputs of fc8"""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    peak_tflops: Optional[float] = None
    """peak TFLOP/s for MFU on a device the table lacks"""
    seed: int = 0
    """seeds the parameters and the images"""
    profile_dir: Annotated[
        Optional[str], tyro.conf.arg(name="profile", aliases=("--profile-dir",), metavar="DIR")
    ] = None
    """trace 3 steps of each case with jax.profiler into DIR and print device time by kind"""
    remat: bool = False
    """also time remat=True (jax.checkpoint per conv block) and report its temp memory and step time"""
    devices: Optional[int] = None
    """use this many devices (default: all); the batch sizes are global, split over them"""
    scaling: bool = False
    """also time 1, 2, 4, ... devices at the same per-device batch; report scaling efficiency"""

    @property
    def vs_torch(self) -> bool:
        return "torch" in self.peers

    @property
    def vs_torch_compile(self) -> bool:
        return "torch-compile" in self.peers


def check_spec(spec: BenchSpec) -> None:
    """Refuses a spec that cannot run, before anything is compiled: a `BenchFieldError` names the field (the
    command line puts its flag there)."""
    for field, values, allowed in (
        ("configs", spec.configs, CONFIGS),
        ("dtypes", spec.dtypes, COMPUTE_DTYPES),
        ("modes", spec.modes, MODES),
        ("peers", spec.peers, PEERS),
    ):
        unknown = [value for value in values if value not in allowed]
        if unknown or (not values and field != "peers"):
            raise BenchFieldError(
                field,
                f"takes {', '.join(allowed)} (comma-separated), got "
                f"{', '.join(map(str, unknown)) or 'nothing'}",
            )
    if not MIN_IMAGE_SIZE <= spec.image_size <= MAX_IMAGE_SIZE:
        raise BenchFieldError(
            "image_size",
            f"must be between {MIN_IMAGE_SIZE} (five 2x2 pools) and {MAX_IMAGE_SIZE}, got {spec.image_size}",
        )
    for field, value, minimum in (("steps", spec.steps, 1), ("warmup", spec.warmup, 0)):
        if value is not None and not minimum <= value <= MAX_STEPS:
            raise BenchFieldError(field, f"must be between {minimum} and {MAX_STEPS}, got {value}")
    if spec.batch_sizes is not None and any(not 1 <= b <= MAX_BATCH for b in spec.batch_sizes):
        raise BenchFieldError("batch_sizes", f"must be between 1 and {MAX_BATCH}, got {spec.batch_sizes}")
    if spec.peak_tflops is not None and not (math.isfinite(spec.peak_tflops) and spec.peak_tflops > 0):
        raise BenchFieldError("peak_tflops", f"must be a positive finite number, got {spec.peak_tflops}")
    if spec.devices is not None and not 1 <= spec.devices <= MAX_DEVICES:
        raise BenchFieldError("devices", f"must be a positive number of devices, got {spec.devices}")
    for config in spec.configs:
        try:
            _model(spec, config, "float32")  # VGG's own checks of its fields, the one place they are made
        except FieldError as error:
            raise BenchFieldError(error.field, error.problem) from None
        except (TypeError, ValueError) as error:
            raise BenchError(str(error)) from None
    if spec.vs_torch or spec.vs_torch_compile:
        try:
            peers.check_torch()
        except peers.PeerUnavailable as error:
            raise BenchError(str(error)) from None


def resolve_sizes(spec: BenchSpec, backend: str) -> tuple[BenchSpec, Optional[str]]:
    """Fills unset sizes with the backend's defaults, and unset widths with VGG's; returns a notice when CPU
    defaults apply."""
    defaults = CPU_DEFAULTS if backend == "cpu" else ACCELERATOR_DEFAULTS
    filled = dataclasses.replace(
        spec,
        model=dataclasses.replace(
            spec.model,
            width_scale=spec.model.width_scale or VGG.width_scale,
            fc_width=spec.model.fc_width or VGG.fc_width,
        ),
        batch_sizes=spec.batch_sizes or (defaults["batch_size"],),
        steps=spec.steps if spec.steps is not None else defaults["steps"],
        warmup=spec.warmup if spec.warmup is not None else defaults["warmup"],
    )
    used = {"batch_sizes": filled.batch_sizes[0], "steps": filled.steps, "warmup": filled.warmup}
    unset = [field for field in used if getattr(spec, field) is None]
    notice = None
    if backend == "cpu" and unset:
        notice = (
            "Running on CPU, so the CPU defaults apply: "
            f"{' '.join(f'{flag(BenchSpec, field)} {used[field]}' for field in unset)} "
            "(the original benchmark's accelerator defaults are 32 / 100 / 10); give them to override."
        )
    return filled, notice


def step_function(
    model: VGG, mode: str, images: jax.Array, labels: jax.Array, variables: Any, key: jax.Array
):
    """The function a mode times, and its device-resident arguments.

    Returns (function, args, carries_state): when `carries_state`, the first
    argument is the train state, donated, and the first output replaces it.
    With batch norm, training modes use and update the batch statistics.
    """
    params, rest = variables["params"], {name: value for name, value in variables.items() if name != "params"}
    if mode == "forward":

        def forward(variables, images):
            return model.apply(variables, images)

        return forward, (variables, images), False

    if mode == "forward_backward":

        def l2_loss_of_fc8(params, images, key, rest):  # the original benchmark's objective: l2_loss(fc8)
            variables, mutable = {"params": params, **rest}, list(rest) or False
            fc8 = model.apply(variables, images, train=True, rngs={"dropout": key}, mutable=mutable)
            return 0.5 * jnp.sum(jnp.square(fc8[0] if rest else fc8))

        return jax.grad(l2_loss_of_fc8), (params, images, key, rest), False

    # train.py's own step and optimiser, from a run config with this model's settings and train.py's
    # defaults: uint8 crops normalised on the device, cross-entropy, the paper's SGD, metrics, state donated.
    cfg = TrainConfig(workdir="", config=model.config, model=ModelConfig(freeze=model.freeze))
    optimizer, step = make_train_step(cfg, model, total_steps=1)
    state = train.create_train_state(model, optimizer, variables)
    return step, (state, train_batch(images, labels), key), True


def train_batch(images: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """A batch as train.py's input gives it (`TrainConfig`'s pixels): uint8 crops, zero colour shifts,
    labels."""
    pixels = jnp.clip(jnp.round(127.5 + 255.0 * images), 0, 255).astype(jnp.uint8)
    return {"image": pixels, "shift": jnp.zeros((images.shape[0], 3), jnp.float32), "label": labels}


def _seed_line(label: str, steps: int, stats: dict[str, float]) -> str:
    """The original TF1 benchmark's summary line, kept so its users recognise it."""
    return (
        f"{datetime.datetime.now()}: {label} across {steps} steps, {stats['mean_s']:.3f} +/- "
        f"{stats['std_s']:.3f} sec / batch"
    )


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
    """The VGG of one case: the spec's model fields passed through, one config and dtype of its sweeps."""
    return model_from(spec.model, config=config, dtype=dtype, remat=remat, num_classes=spec.num_classes)


def init_variables(spec: BenchSpec, config: str, device: Any) -> Any:
    """float32 variables on the device (parameters, and batch statistics with BN); they do not depend on the
    batch or the compute dtype."""
    images = jnp.zeros((1, spec.image_size, spec.image_size, 3), jnp.float32)
    with jax.default_device(device):
        return jax.jit(_model(spec, config, "float32").init)(jax.random.key(spec.seed), images)


@dataclasses.dataclass
class _Timed:
    """One mode of one case, measured: compile figures, the compiled program, seconds per step."""

    name: str
    compile_s: float
    lower_s: float
    compiled: Any
    traces: list[int]
    times: list[float] = dataclasses.field(default_factory=list)
    stepper: Any = None  # ours: the compiled step bound to its arguments
    profile: Optional[list] = None  # --profile: (kind, ms per step, share) rows
    profile_layers: Optional[list] = None  # --profile: ((layer, direction), ms per step, share) rows


@dataclasses.dataclass
class _Case:
    """One config, global batch and dtype on a mesh: the model and the device-resident inputs every mode
    uses."""

    spec: BenchSpec
    config: str
    batch_size: int
    dtype: str
    mesh: Any
    variables: Any
    images: jax.Array
    labels: jax.Array
    dropout_key: jax.Array
    info: dict[str, Any]

    @property
    def devices(self) -> int:
        return self.mesh.devices.size

    def name(self, mode: str) -> str:
        return f"{self.config} batch {self.batch_size} {self.dtype} {mode.replace('_', '-')}" + (
            f" on {self.devices} devices" if self.devices > 1 else ""
        )


def _make_case(spec: BenchSpec, config: str, batch_size: int, dtype: str, mesh: Any, variables: Any) -> _Case:
    device = mesh.devices.flat[0]
    image_key, label_key, dropout_key = jax.random.split(jax.random.key(spec.seed + 1), 3)
    with jax.default_device(device):
        # the original's N(0, 0.1)
        images = 0.1 * jax.random.normal(
            image_key, (batch_size, spec.image_size, spec.image_size, 3), jnp.float32
        )
        labels = jax.random.randint(label_key, (batch_size,), 0, spec.num_classes)
    return _Case(
        spec,
        config,
        batch_size,
        dtype,
        mesh,
        variables,
        images,
        labels,
        dropout_key,
        hardware.device_info(device),
    )


def _time_mode(
    case: _Case, mode: str, log: Callable[[str], None]
) -> tuple[_Timed, Optional[_Timed], list[tuple[str, Any, _Timed]]]:
    """Compiles our step (and the remat variant and the torchvision peers asked for), warms up, and times them
    all
    in alternating rounds: (ours, remat or None, [(peer kind, peer, timed)])."""
    spec = case.spec
    try:
        ours = _compile(case, _model(spec, case.config, case.dtype), mode)
        timed = [ours]
        remat = None
        if spec.remat and mode != "forward":  # remat changes nothing without a backward pass
            remat = _compile(case, _model(spec, case.config, case.dtype, remat=True), mode)
            timed.append(remat)
        peer_list = [
            (kind, peer, _Timed(peer.name, 0.0, 0.0, None, [0])) for kind, peer in _peers(case, mode, log)
        ]
        steps = [t.stepper.step for t in timed] + [peer.step for _, peer, _ in peer_list]
        timing.warm_up(steps, spec.warmup or 0)
        if spec.vs_torch_compile and not spec.warmup:
            log("  note: torch.compile compiles in its first step; with --warmup 0 that is timed")
        with _Progress() as progress:
            times = timing.time_interleaved(steps, spec.steps, progress.task(case.name(mode), spec.steps))
    except Exception as error:
        if timing.is_out_of_memory(error):
            raise BenchError(
                f"{case.name(mode)} does not fit in device memory; try a smaller --batch-size (for example "
                f"{max(1, case.batch_size // 2)})"
            ) from None
        raise
    for entry, seconds in zip(timed + [t for _, _, t in peer_list], times):
        entry.times = seconds
    if spec.profile_dir:
        directory = os.path.join(spec.profile_dir, re.sub(r"[^\w.-]+", "_", case.name(mode)))
        ours.profile, ours.profile_layers = device_profile.profile(
            ours.stepper.step, ours.compiled.as_text(), directory
        )
        log(f"  device time by kind ({directory}):\n" + device_profile.render(ours.profile))
        for kind, peer, peer_timed in peer_list:  # the same split for torchvision, from torch.profiler
            peer_timed.profile, peer_timed.profile_layers = device_profile.profile_torch(
                peer.step,
                3,
                os.path.join(directory, peer.name.replace(" ", "_")),
                module=peer.module if kind == "torch" else None,
            )
            log(f"  {peer.name}, device time by kind:\n" + device_profile.render(peer_timed.profile))
        peer_layers = next((t.profile_layers for kind, _, t in peer_list if kind == "torch"), None)
        log(
            "  time by layer (ms per step):\n"
            + device_profile.render_layers(ours.profile_layers, peer_layers, "torchvision")
        )
    return ours, remat, peer_list


def _peers(case: _Case, mode: str, log: Callable[[str], None]) -> list[tuple[str, Any]]:
    """The torchvision peers the spec asks for that can run this case."""
    wanted = [kind for kind in PEERS if kind in case.spec.peers]
    if wanted and case.devices > 1:
        log(f"  torchvision: skipped, it runs on one device and this case uses {case.devices}")
        return []
    made = [
        (
            kind,
            _make_peer(
                case.spec,
                case.config,
                case.batch_size,
                case.dtype,
                mode,
                case.info["backend"],
                log,
                compile=kind == "torch-compile",
            ),
        )
        for kind in wanted
    ]
    return [(kind, peer) for kind, peer in made if peer is not None]


def step_flops(
    config: str, mode: str, batch_size: int, image_size: int, freeze: Optional[str] = None, **widths: Any
) -> tuple[float, str]:
    """The FLOPs of one step by the paper's count (2 per MAC), and where the figure comes from.

    A backward pass is twice its forward (the input and the kernel gradient). With layers frozen up to
    `freeze`, only the layers above it have a backward pass, and the lowest of them needs no input
    gradient. Counted per layer (`layer_macs`), not by XLA's cost analysis, which counts a loop's body
    once (the CPU's blocked kernel gradient runs under `lax.scan`).
    """
    macs = layer_macs(config, image_size, **widths)
    forward = 2.0 * sum(macs.values()) * batch_size
    if mode == "forward":
        return forward, "count_macs (2 FLOPs per MAC)"
    if freeze is None:
        return 3 * forward, "count_macs (2 FLOPs per MAC, x3 for a backward pass)"
    frozen = set(frozen_layers(config, freeze))
    trained = [macs[name] for name in macs if name not in frozen]
    backward = 2.0 * batch_size * (2 * sum(trained) - (trained[0] if trained else 0))
    return forward + backward, f"count_macs per layer (--freeze {freeze}: no backward pass below it)"


def _mode_result(
    case: _Case, mode: str, ours: _Timed, remat: Optional[_Timed], peer_list: list, baseline: Optional[dict]
) -> dict[str, Any]:
    """The record of one mode (docs/bench.md's schema): throughput, FLOPs, MFU, memory, and the
    comparisons."""
    spec, batch_size, devices = case.spec, case.batch_size, case.devices
    stats = timing.summarise(ours.times)
    analytic, source = step_flops(
        case.config,
        mode,
        batch_size,
        spec.image_size,
        spec.model.freeze,
        num_classes=spec.num_classes,
        fc_width=spec.model.fc_width,
        width_scale=spec.model.width_scale,
    )
    peak, peak_name = (
        (spec.peak_tflops, "--peak-tflops")
        if spec.peak_tflops
        else hardware.peak_tflops(case.info["device_kind"], case.dtype)
    )
    tflops = analytic / stats["median_s"] / 1e12
    memory = timing.memory(ours.compiled)
    memory["peak_bytes"] = hardware.peak_bytes_in_use(case.mesh.devices.flat[0])
    result = {
        "compile_s": ours.compile_s,
        "lower_s": ours.lower_s,
        **stats,
        "images_per_s": batch_size / stats["median_s"],
        "flops_per_step": analytic,
        "flops_source": source,
        "xla_flops_per_step": timing.xla_flops(ours.compiled),
        "tflops_per_s": tflops,
        "peak_tflops": peak,
        "peak_source": peak_name,
        "mfu": tflops / (peak * devices) if peak else None,
        "images_per_s_per_device": batch_size / stats["median_s"] / devices,
        "memory": memory,
        "traces": ours.traces[0],
        "steps": spec.steps,
        "warmup": spec.warmup,
    }
    if remat is not None:
        remat_median = timing.summarise(remat.times)["median_s"]
        result["remat"] = {
            "compile_s": remat.compile_s,
            "median_s": remat_median,
            "images_per_s": batch_size / remat_median,
            "temp_bytes": timing.memory(remat.compiled)["temp_bytes"],
            "step_time_ratio": remat_median / stats["median_s"],
        }
    for kind, peer, timed in peer_list:
        peer_median = timing.summarise(timed.times)["median_s"]
        key = "peer" if kind == "torch" else "compiled_peer"
        result[key] = {"name": peer.name, "median_s": peer_median, "images_per_s": batch_size / peer_median}
        if timed.profile is not None:
            result[key]["profile"] = device_profile.records(timed.profile)
            result[key]["profile_by_layer"] = device_profile.records(timed.profile_layers)
        result["ratio" if kind == "torch" else "compiled_ratio"] = (
            result["images_per_s"] / result[key]["images_per_s"]
        )
    if baseline is not None and mode in baseline["results"]:
        result["scaling_efficiency"] = result["images_per_s"] / (
            devices * baseline["results"][mode]["images_per_s"]
        )
    if ours.profile is not None:
        result["profile"] = device_profile.records(ours.profile)
        result["profile_by_layer"] = device_profile.records(ours.profile_layers)
    return result


def _print_mode(
    case: _Case,
    mode: str,
    result: dict[str, Any],
    remat: Optional[_Timed],
    peer_list: list,
    log: Callable[[str], None],
) -> None:
    """The original benchmark's line, then ours: throughput, MFU, compile time, and each comparison."""
    steps = case.spec.steps
    log(_seed_line(SEED_LABELS[mode], steps, result))
    mfu_text = "n/a (unknown peak)" if result["mfu"] is None else f"{result['mfu']:.1%}"
    log(
        f"  {case.name(mode)}: median {result['median_s']:.4f} s, min {result['min_s']:.4f} s, "
        f"{result['images_per_s']:.1f} img/s, "
        f"{result['tflops_per_s']:.3f} TFLOP/s, MFU {mfu_text}, compile {result['compile_s']:.2f} s"
    )
    if remat is not None:
        before, after = result["memory"]["temp_bytes"], result["remat"]["temp_bytes"]
        drop = "" if not before or after is None else f" ({after / before:.2f}x)"
        log(
            f"  remat=True: temp {_mib(before)} -> {_mib(after)} MiB{drop}, median "
            f"{result['remat']['median_s']:.4f} s "
            f"({result['remat']['step_time_ratio']:.2f}x the step time), compile {remat.compile_s:.2f} s"
        )
    for kind, peer, timed in peer_list:
        ratio = result["ratio" if kind == "torch" else "compiled_ratio"]
        log(
            f"  {peer.name}: "
            f"{_seed_line(SEED_LABELS[mode], steps, timing.summarise(timed.times)).split(': ', 1)[1]}; ours "
            f"/ peer = {ratio:.2f}x"
        )
    if "scaling_efficiency" in result:
        log(
            f"  scaling: {case.devices} devices x {case.batch_size // case.devices} images = "
            f"{result['images_per_s']:.1f} img/s, "
            f"{result['images_per_s_per_device']:.1f} per device, efficiency "
            f"{result['scaling_efficiency']:.1%} against 1 device"
        )


def benchmark_case(
    spec: BenchSpec,
    config: str,
    batch_size: int,
    dtype: str,
    mesh: Any,
    variables: Any,
    dispatch_s: float,
    log: Callable[[str], None] = print,
    baseline: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """One record: every mode of one config, global batch and dtype on a mesh (docs/bench.md has the schema).

    `baseline` is the one-device record at the same per-device batch, for the
    scaling efficiency.
    """
    case = _make_case(spec, config, batch_size, dtype, mesh, variables)
    results: dict[str, Any] = {}
    for mode in spec.modes:
        ours, remat, peer_list = _time_mode(case, mode, log)
        results[mode] = _mode_result(case, mode, ours, remat, peer_list, baseline)
        _print_mode(case, mode, results[mode], remat, peer_list, log)
    return {
        "config": config,
        "batch_size": batch_size,
        "image_size": spec.image_size,
        "dtype": dtype,
        **case.info,
        "device_count": case.devices,
        "per_device_batch": batch_size // case.devices,
        "versions": hardware.versions(),
        "xla_flags": hardware.xla_flags(),
        "dispatch_s": dispatch_s,
        "width_scale": spec.model.width_scale,
        "conv_impl": resolve_conv_impl(spec.model.conv_impl),  # what ran: "auto" resolved
        "relu_impl": spec.model.relu_impl,
        "pool_impl": resolve_pool_impl(spec.model.pool_impl),
        "freeze": spec.model.freeze,
        "batch_norm": spec.model.batch_norm,
        "fc_width": spec.model.fc_width,
        "num_classes": spec.num_classes,
        "results": results,
    }


def _compile(case: _Case, model: VGG, mode: str) -> _Timed:
    """Lowers and compiles one mode's step on the case's mesh with explicit shardings."""
    function, args, carries_state = step_function(
        model, mode, case.images, case.labels, case.variables, case.dropout_key
    )
    in_shardings, out_shardings = _shardings(mode, args, case.mesh)
    begin = time.perf_counter()
    stepper, compiled, lower_s, traces = timing.compile_step(
        function, parallel.put(args, in_shardings), in_shardings, out_shardings, carries_state
    )
    return _Timed(case.name(mode), time.perf_counter() - begin, lower_s, compiled, traces, stepper=stepper)


def _shardings(mode: str, args: tuple, mesh: Any) -> tuple[Any, Any]:
    """Data-parallel in and out shardings of a mode's arguments and outputs: batches split, the rest
    replicated."""
    whole, rows = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    if mode == "forward":
        return (whole, rows), rows
    if mode == "forward_backward":
        return (whole, rows, whole, whole), whole
    state = parallel.state_sharding(args[0], mesh)
    return (state, {"image": rows, "shift": rows, "label": rows}, whole), (state, whole)


def _mib(value: Optional[int]) -> str:
    return "?" if value is None else f"{value / 2**20:,.0f}"


def _make_peer(
    spec: BenchSpec,
    config: str,
    batch_size: int,
    dtype: str,
    mode: str,
    backend: str,
    log: Callable[[str], None],
    compile: bool = False,
):
    if spec.model.width_scale != 1.0 or spec.model.fc_width != 4096 or spec.model.batch_norm:
        log("  torchvision: skipped, it has no --width-scale or --fc-width (and runs without --batch-norm)")
        return None
    try:
        return peers.TorchVisionPeer(
            config,
            batch_size,
            spec.image_size,
            dtype,
            mode,
            spec.num_classes,
            use_cuda=backend == "gpu",
            compile=compile,
        )
    except peers.PeerUnavailable as error:
        log(f"  torchvision: skipped, {error}")
        return None


def run(spec: BenchSpec, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Benchmarks every config, batch size and dtype of `spec`; one record each (and per device count with
    `scaling`)."""
    check_spec(spec)
    try:
        mesh = parallel.make_mesh(spec.devices)
    except ValueError as error:
        raise BenchError(str(error)) from None
    device = mesh.devices.flat[0]
    spec, notice = resolve_sizes(spec, device.platform)
    for line in (notice, hardware.bf16_notice(spec.dtypes, device.platform)):
        if line:
            log(line)
    info = hardware.device_info(device)
    log(
        f"Device: {info['device_kind']} ({info['backend']}), jax {jax.__version__}, "
        f"XLA_FLAGS={' '.join(hardware.xla_flags()) or '(none)'}"
    )
    log(
        f"Images: {spec.image_size}x{spec.image_size}x3, batch {', '.join(map(str, spec.batch_sizes))}; "
        + "; ".join(MODE_MEANINGS[mode] for mode in spec.modes)
    )
    if (spec.vs_torch or spec.vs_torch_compile) and spec.image_size != 224:
        log("Note: torchvision pools to 7x7 before fc6, so its work equals ours only at --image-size 224.")
    dispatch_s = timing.dispatch_overhead(device)
    log(f"Host dispatch of a trivial jitted call: {dispatch_s * 1e6:.0f} us per step")
    devices = mesh.devices.size
    if spec.scaling and jax.process_count() > 1:
        raise BenchError("scaling compares against one device, so it runs in one process; run it on one host")
    for batch_size in spec.batch_sizes:
        try:
            parallel.check_global_batch(batch_size, mesh)
        except ValueError as error:
            raise BenchError(f"batch_sizes: {error}") from None
    counts = _device_counts(devices) if spec.scaling else [devices]
    if spec.scaling:
        log(f"Scaling: {', '.join(map(str, counts))} devices at the same per-device batch")
    records = []
    for config in spec.configs:
        variables = init_variables(spec, config, device)
        for batch_size in spec.batch_sizes:
            for dtype in spec.dtypes:
                baseline = None
                for count in counts:
                    submesh = parallel.make_mesh(count) if count != devices else mesh
                    record = benchmark_case(
                        spec,
                        config,
                        batch_size // devices * count,
                        dtype,
                        submesh,
                        variables,
                        dispatch_s,
                        log,
                        baseline=baseline if count > 1 else None,
                    )
                    baseline = record if count == 1 else baseline
                    records.append(record)
        del variables
    return records


def _device_counts(devices: int) -> list[int]:
    """1, 2, 4, ... below `devices`, then `devices`."""
    counts, count = [], 1
    while count < devices:
        counts.append(count)
        count *= 2
    return counts + [devices]


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One command line's work, as `scripts/bench.py` builds it: what to time, and where the outputs go."""

    spec: BenchSpec = BenchSpec()
    json: Annotated[Optional[str], tyro.conf.arg(metavar="PATH")] = None
    """write the records as JSON (schema in docs/bench.md); a new file: an existing one is never replaced"""
    plot: Annotated[Optional[str], tyro.conf.arg(metavar="PATH")] = None
    """write images/s per config and batch (.png, .jpg, .svg or .pdf); a new file, as --json"""
    cache_dir: Annotated[Optional[str], tyro.conf.arg(metavar="DIR")] = None
    """JAX's persistent compilation cache directory"""


def check_outputs(config: BenchConfig) -> None:
    """Refuses empty or unwritable output paths, and a plot without matplotlib, before anything runs."""
    from vgg_jax.benchmark import report

    for path, field in ((config.json, "json"), (config.plot, "plot"), (config.cache_dir, "cache_dir")):
        if path is not None and not path.strip():
            raise BenchFieldError(field, "needs a path, got an empty string")
    for path, field in ((config.json, "json"), (config.plot, "plot")):
        if path and os.path.exists(path):  # as every command treats an output: never replaced
            raise BenchFieldError(field, f"{path} already exists; choose another path or remove it first")
        if path:
            report.check_writable(path, field)
    if config.plot:
        report.check_plot_available()
        report.plot_format(config.plot)


def execute(config: BenchConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Checks the config, times every case, prints the table and writes the outputs it asks for; returns the
    records.

    Bad input and a batch that does not fit raise `BenchError` (or ValueError,
    OSError) with a one-line message, before anything is written.
    """
    from vgg_jax.benchmark import report

    check_spec(config.spec)
    check_outputs(config)
    if config.cache_dir:
        os.makedirs(config.cache_dir, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", config.cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    records = run(config.spec, log)
    report.render_table(records)
    if config.json:
        report.write_json(records, config.json)
        log(f"Wrote {len(records)} records to {config.json}")
    if config.plot:
        report.write_plot(records, config.plot)
        log(f"Wrote the plot to {config.plot}")
    return records
