"""Where a step's device time goes: a `jax.profiler` trace of a few steps, summed by kind of operation.

`scripts/bench.py --profile DIR` traces a few steps of its first case into DIR
(viewable in Perfetto or TensorBoard) and prints a table that groups the
device time by kind: forward convs, input-gradient convs, weight-gradient
convs, pooling and its gradient, elementwise fusions, matmuls, copies and
transposes. The kind of each traced operation comes from the optimised HLO of
the step (its instruction name, opcode and, for library calls, the cuDNN or
cuBLAS target), so the split is the compiler's, not a guess from names.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import gzip
import json
import os
import re
from typing import Any, Callable, Iterable, Iterator

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*[^=]*?\s([a-z][\w\-]*)\(")
_CUSTOM_TARGETS = {
    "convForward": "conv forward",
    "convBiasActivationForward": "conv forward",
    "convBackwardInput": "conv input-gradient",
    "convBackwardFilter": "conv weight-gradient",
    "gemm": "matmul",
    "matmul": "matmul",
}


def _conv_kind(line: str) -> str:
    """A `convolution`'s role from its dimension labels: a weight gradient writes a kernel-shaped
    (spatial-first) output."""
    labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", line)
    if labels and labels.group(3)[0] in "0123456789":
        return "conv weight-gradient"
    if "rhs_reversal=1" in line or "lhs_dilate" in line:
        return "conv input-gradient"
    return "conv forward"


def _computations(hlo_text: str) -> dict[str, str]:
    """Computation name -> its body text (the instructions between its braces)."""
    bodies, name, lines = {}, None, []
    for line in hlo_text.splitlines():
        header = re.match(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s*(?:\(.*\))?.*\{\s*$", line)
        if name is None and header and "=" not in line.split("{")[0]:
            name, lines = header.group(1), []
        elif name is not None and line.strip() == "}":
            bodies[name], name = "\n".join(lines), None
        elif name is not None:
            lines.append(line)
    return bodies


def _fusion_kind(line: str, bodies: dict[str, str]) -> str:
    """A fusion's kind from what it computes: its convolution, dot or pooling, else elementwise work."""
    called = re.search(r"calls=%?([\w.\-]+)", line)
    body = bodies.get(called.group(1), "") if called else ""
    for inner in body.splitlines():
        match = _INSTRUCTION.match(inner)
        if match and match.group(2) == "convolution":
            return _conv_kind(inner)
    if re.search(r"\s(dot|custom-call)\(", body):
        return "matmul"
    if re.search(r"\s(select-and-scatter|reduce-window)\(", body):
        return "pooling"
    return "elementwise fusion"


def classify(hlo_text: str) -> dict[str, str]:
    """Instruction name -> kind, for every instruction of an optimised HLO module's text.

    A fusion takes the kind of the convolution, dot or pooling inside it when it
    has one, else "elementwise fusion"; library calls take their cuDNN or cuBLAS target's.
    """
    kinds: dict[str, str] = {}
    bodies = _computations(hlo_text)
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, opcode = match.groups()
        if opcode == "custom-call":
            target = re.search(r'custom_call_target="([^"]+)"', line)
            kind = next(
                (k for key, k in _CUSTOM_TARGETS.items() if target and key in target.group(1)), "other"
            )
        elif opcode == "convolution":
            kind = _conv_kind(line)
        elif opcode in ("select-and-scatter", "reduce-window"):
            kind = "pooling"
        elif opcode == "dot":
            kind = "matmul"
        elif opcode in ("copy", "transpose", "copy-start", "copy-done"):
            kind = "copy/transpose"
        elif opcode == "fusion":
            kind = _fusion_kind(line, bodies)
        else:
            kind = "other"
        kinds[name] = kind
    return kinds


def trace_events(directory: str) -> list[dict[str, Any]]:
    """The complete ("X") events of the newest Perfetto trace under `directory`."""
    paths = sorted(
        glob.glob(os.path.join(directory, "**", "perfetto_trace.json.gz"), recursive=True),
        key=os.path.getmtime,
    )
    if not paths:
        raise ValueError(f"no perfetto_trace.json.gz under {directory}: the trace was not written")
    with gzip.open(paths[-1], "rt") as file:
        trace = json.load(file)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [event for event in events if event.get("ph") == "X" and "dur" in event]


def module_name(hlo_text: str) -> str:
    """The HLO module's name (its first line: `HloModule jit_step, ...`)."""
    match = re.match(r"\s*HloModule\s+([\w.\-]+)", hlo_text)
    return match.group(1) if match else ""


def summarise(
    events: Iterable[dict[str, Any]], kinds: dict[str, Any], steps: int, module: str = ""
) -> list[tuple[Any, float, float]]:
    """(kind, milliseconds per step, share) for the events that are HLO instructions of the step, largest
    first.

    Events of other modules are left out when `module` is given. Times add up
    over threads and streams: on a CPU, whose thunks run on several threads at
    once, the sum exceeds the step's wall time. `kinds` may map instructions to
    any key (`layers` gives (layer, direction)); the rows are then by that key.
    """
    totals: dict[Any, float] = collections.defaultdict(float)
    for event in events:
        args = event.get("args") or {}
        if module and args.get("hlo_module") not in (None, module):
            continue
        name = str(args.get("hlo_op") or event.get("name", ""))
        kind = kinds.get(name) or kinds.get(name.split(":")[0])
        if kind is not None:
            totals[kind] += float(event["dur"]) / 1000.0  # microseconds -> ms
    return _rows(totals, steps)


_LAYER = re.compile(
    r"(?<![A-Za-z0-9])(conv\d+_\d+|fc\d+)(?!\d)"
)  # in op names and `p__params____fc6____kernel__`


def layers(hlo_text: str) -> dict[str, tuple[str, str]]:
    """Instruction name -> (layer, "forward" or "backward"), from the JAX op name in its metadata
    (`.../VGG/conv3_1/...`, under `transpose(...)` in the backward pass); for the few that lost it (the
    FC layers' dots, a kernel's reversal), from the parameter they read (`fc6`'s kernel), backward when
    the kernel is transposed (contracted on its output side) or reversed; "other" where nothing names a
    layer (pooling, the loss, the optimiser)."""
    found = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        op_name = re.search(r'op_name="([^"]*)"', line)
        names = _LAYER.findall(op_name.group(1) if op_name else line)
        if op_name:
            backward = "transpose(" in op_name.group(1)
        else:
            backward = "rhs_contracting_dims={1}" in line or "reverse" in match.group(1)
        found[match.group(1)] = (names[-1] if names else "other", "backward" if backward else "forward")
    return found


def profile(
    run_step: Callable[[], Any], hlo_text: str, directory: str, steps: int = 3
) -> tuple[list[tuple[str, float, float]], list[tuple[tuple[str, str], float, float]]]:
    """Traces `steps` calls of `run_step` (each blocking) into `directory`; the summaries by kind and by
    (layer, direction)."""
    import jax

    os.makedirs(directory, exist_ok=True)
    jax.profiler.start_trace(directory, create_perfetto_trace=True)
    try:
        for _ in range(steps):
            jax.block_until_ready(run_step())
    finally:
        jax.profiler.stop_trace()
    events, module = trace_events(directory), module_name(hlo_text)
    return (
        summarise(events, classify(hlo_text), steps, module),
        summarise(events, layers(hlo_text), steps, module),
    )


def records(rows: list[tuple[Any, float, float]]) -> list[dict[str, Any]]:
    """A summary as JSON records: kind (or layer and direction), ms_per_step, share."""
    return [
        {
            **({"layer": key[0], "direction": key[1]} if isinstance(key, tuple) else {"kind": key}),
            "ms_per_step": ms,
            "share": share,
        }
        for key, ms, share in rows
    ]


def render(rows: list[tuple[str, float, float]]) -> str:
    """The summary as a Markdown table."""
    lines = ["| kind | ms per step | share |", "|---|---|---|"]
    lines += [f"| {kind} | {ms:.3f} | {share:.1%} |" for kind, ms, share in rows]
    return "\n".join(lines)


def render_layers(ours: list[tuple[tuple[str, str], float, float]], peer: Any = None, name: str = "") -> str:
    """The by-layer summary as a Markdown table, in the network's order: ours forward and backward, and,
    given a peer's summary, its two and the peer's time over ours for the layer."""
    ms = collections.defaultdict(float)
    for side, rows in (("ours", ours), ("peer", peer or [])):
        for (layer, direction), value, _ in rows:
            ms[side, layer, direction] += value
    order = sorted(
        {layer for _, layer, _ in ms},
        key=lambda layer: (
            layer == "other",
            layer.startswith("fc"),
            [int(n) for n in re.findall(r"\d+", layer)],
        ),
    )
    head = "| layer | ours forward ms | ours backward ms |"
    head += f" {name} forward ms | {name} backward ms | {name} / ours |" if peer else ""
    lines = [head, "|---" * head.count(" | ") + "|---|"]
    for layer in order:
        ours_ms = [ms["ours", layer, d] for d in ("forward", "backward")]
        line = f"| {layer} | {ours_ms[0]:.1f} | {ours_ms[1]:.1f} |"
        if peer:
            peer_ms = [ms["peer", layer, d] for d in ("forward", "backward")]
            line += f" {peer_ms[0]:.1f} | {peer_ms[1]:.1f} | {sum(peer_ms) / max(sum(ours_ms), 1e-9):.2f}x |"
        lines.append(line)
    return "\n".join(lines)


# torch.profiler's kernel (GPU) or operator (CPU) names -> kinds, first match wins: cuDNN's fprop/dgrad/wgrad
# kernels and aten's convolution ops, pooling, GEMMs, copies and layout changes, and Triton/elementwise
# kernels.
_TORCH_KINDS = (
    (("dgrad", "convolution_backward_input"), "conv input-gradient"),
    (("wgrad", "convolution_backward_weight"), "conv weight-gradient"),
    (
        ("fprop", "aten::convolution", "aten::_convolution", "aten::conv2d", "mkldnn_convolution"),
        "conv forward",
    ),
    (("max_pool",), "pooling"),
    (("gemm", "aten::mm", "aten::addmm", "aten::linear", "aten::matmul"), "matmul"),
    (("copy", "transpose", "nchwtonhwc", "nhwctonchw", "aten::contiguous", "aten::clone"), "copy/transpose"),
    (
        ("triton", "elementwise", "vectorized", "aten::relu", "aten::threshold", "aten::add", "aten::mul"),
        "elementwise fusion",
    ),
)


def torch_kind(name: str) -> str:
    """The kind of a torch.profiler kernel or operator, from its name (`convolution_backward` counts as
    input-gradient
    on a CPU, where aten does not split it)."""
    lower = name.lower()
    if lower == "aten::convolution_backward":
        return "conv input-gradient"
    return next((kind for keys, kind in _TORCH_KINDS if any(key in lower for key in keys)), "other")


def profile_torch(
    run_step: Callable[[], Any], steps: int = 3, directory: str = "", module: Any = None
) -> tuple[list[tuple[str, float, float]], list[tuple[tuple[str, str], float, float]]]:
    """The same summaries for a torch step (torchvision under `torch.compile`): by kind, from CUDA kernels
    where there are any, else the CPU's top-level aten operators; and, given the (uncompiled) torchvision
    VGG `module` on a CPU, by (layer, direction), each layer's modules timed whole (`_layer_ranges`).
    Writes a Chrome trace into `directory` when given."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    ranges = _layer_ranges(module) if module is not None and not cuda else contextlib.nullcontext({})
    with ranges as range_names, torch_profile(activities=activities) as profiler:
        for _ in range(steps):
            run_step()
    if directory:
        os.makedirs(directory, exist_ok=True)
        profiler.export_chrome_trace(os.path.join(directory, "torch_trace.json"))
    totals: dict[str, float] = collections.defaultdict(float)
    by_layer: dict[tuple[str, str], float] = collections.defaultdict(float)
    for event in profiler.key_averages():
        if event.key in range_names:
            by_layer[range_names[event.key]] += event.cpu_time_total / 1000.0
            continue
        if cuda:
            ms = getattr(event, "device_time_total", getattr(event, "cuda_time_total", 0.0)) / 1000.0
            if getattr(event, "device_type", None) is not None and "CUDA" not in str(event.device_type):
                continue
        else:
            if not event.key.startswith("aten::") or event.key in ("aten::empty", "aten::to"):
                continue
            ms = event.self_cpu_time_total / 1000.0
        if ms > 0:
            totals[torch_kind(event.key)] += ms
    return _rows(totals, steps), _rows(by_layer, steps)


def _rows(totals: dict[Any, float], steps: int) -> list[tuple[Any, float, float]]:
    grand = sum(totals.values()) or 1.0
    return sorted(((key, ms / steps, ms / grand) for key, ms in totals.items()), key=lambda row: -row[1])


@contextlib.contextmanager
def _layer_ranges(model: Any) -> Iterator[dict[str, tuple[str, str]]]:
    """Profiler ranges around each layer of a torchvision VGG, forward and backward, named as ours
    (`conv3_1`, `fc6`: a layer is its conv or linear module and the ReLU, batch norm and dropout after
    it; pooling is "other"); yields range name -> (layer, direction). A layer's backward ends when its
    weight's gradient is accumulated (a module's backward hook fires before it where the module's input
    needs no gradient, as conv1_1's). The ReLUs run out of place meanwhile (a backward hook cannot wrap
    an in-place op's output)."""
    import torch

    names, block, index, fc, layer = {}, 1, 0, 6, "other"
    for child in list(model.features) + list(model.classifier):
        if isinstance(child, torch.nn.Conv2d):
            index += 1
            layer = f"conv{block}_{index}"
        elif isinstance(child, torch.nn.MaxPool2d):
            block, index, layer = block + 1, 0, "other"
        elif isinstance(child, torch.nn.Linear):
            layer, fc = f"fc{fc}", fc + 1
        names[child] = layer
    ranges, open_ranges, handles, inplace = {}, {}, [], {}
    for child, layer in names.items():
        for direction in ("forward", "backward"):
            key = f"vgg_jax/{layer}/{direction}/{id(child)}"
            ranges[key] = (layer, direction)

            def enter(*_: Any, key: str = key) -> None:
                open_ranges[key] = torch.autograd.profiler.record_function(key).__enter__()

            def leave(*_: Any, key: str = key) -> None:
                if key in open_ranges:
                    open_ranges.pop(key).__exit__(None, None, None)

            if direction == "forward":
                handles += [child.register_forward_pre_hook(enter), child.register_forward_hook(leave)]
            elif getattr(child, "weight", None) is not None:  # ends once its weight's gradient is in
                handles += [
                    child.register_full_backward_pre_hook(enter),
                    child.weight.register_post_accumulate_grad_hook(leave),
                ]
            else:
                handles += [
                    child.register_full_backward_pre_hook(enter),
                    child.register_full_backward_hook(leave),
                ]
        if hasattr(child, "inplace"):
            inplace[child], child.inplace = child.inplace, False
    try:
        yield ranges
    finally:
        for handle in handles:
            handle.remove()
        for child, value in inplace.items():
            child.inplace = value
