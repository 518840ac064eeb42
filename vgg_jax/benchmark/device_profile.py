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
import glob
import gzip
import json
import os
import re
from typing import Any, Callable, Iterable

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
    events: Iterable[dict[str, Any]], kinds: dict[str, str], steps: int, module: str = ""
) -> list[tuple[str, float, float]]:
    """(kind, milliseconds per step, share) for the events that are HLO instructions of the step, largest
    first.

    Events of other modules are left out when `module` is given. Times add up
    over threads and streams: on a CPU, whose thunks run on several threads at
    once, the sum exceeds the step's wall time.
    """
    totals: dict[str, float] = collections.defaultdict(float)
    for event in events:
        args = event.get("args") or {}
        if module and args.get("hlo_module") not in (None, module):
            continue
        name = str(args.get("hlo_op") or event.get("name", ""))
        kind = kinds.get(name) or kinds.get(name.split(":")[0])
        if kind is not None:
            totals[kind] += float(event["dur"]) / 1000.0  # microseconds -> ms
    grand = sum(totals.values()) or 1.0
    return sorted(((kind, ms / steps, ms / grand) for kind, ms in totals.items()), key=lambda row: -row[1])


def profile(
    run_step: Callable[[], Any], hlo_text: str, directory: str, steps: int = 3
) -> list[tuple[str, float, float]]:
    """Traces `steps` calls of `run_step` (each blocking) into `directory`; the summary by kind."""
    import jax

    os.makedirs(directory, exist_ok=True)
    jax.profiler.start_trace(directory, create_perfetto_trace=True)
    try:
        for _ in range(steps):
            jax.block_until_ready(run_step())
    finally:
        jax.profiler.stop_trace()
    return summarise(trace_events(directory), classify(hlo_text), steps, module_name(hlo_text))


def records(rows: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
    """The summary as JSON records: kind, ms_per_step, share."""
    return [{"kind": kind, "ms_per_step": ms, "share": share} for kind, ms, share in rows]


def render(rows: list[tuple[str, float, float]]) -> str:
    """The summary as a Markdown table."""
    lines = ["| kind | ms per step | share |", "|---|---|---|"]
    lines += [f"| {kind} | {ms:.3f} | {share:.1%} |" for kind, ms, share in rows]
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
    run_step: Callable[[], Any], steps: int = 3, directory: str = ""
) -> list[tuple[str, float, float]]:
    """The same summary for a torch step (torchvision under `torch.compile`): CUDA kernels where there are
    any,
    else the CPU's top-level aten operators. Writes a Chrome trace into `directory` when given."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as profiler:
        for _ in range(steps):
            run_step()
    if directory:
        os.makedirs(directory, exist_ok=True)
        profiler.export_chrome_trace(os.path.join(directory, "torch_trace.json"))
    totals: dict[str, float] = collections.defaultdict(float)
    for event in profiler.key_averages():
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
    grand = sum(totals.values()) or 1.0
    return sorted(((kind, ms / steps, ms / grand) for kind, ms in totals.items()), key=lambda row: -row[1])
