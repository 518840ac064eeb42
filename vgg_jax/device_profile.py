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

KINDS = (
    "conv forward", "conv input-gradient", "conv weight-gradient", "pooling", "elementwise fusion",
    "matmul", "copy/transpose", "other",
)
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*[^=]*?\s([a-z][\w\-]*)\(")
_CUSTOM_TARGETS = {
    "convForward": "conv forward", "convBiasActivationForward": "conv forward", "convBackwardInput": "conv input-gradient",
    "convBackwardFilter": "conv weight-gradient", "gemm": "matmul", "matmul": "matmul",
}


def _conv_kind(line: str) -> str:
    """A `convolution`'s role from its dimension labels: a weight gradient writes a kernel-shaped (spatial-first) output."""
    labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", line)
    if labels and labels.group(3)[0] in "0123456789":
        return "conv weight-gradient"
    if "window={" in line and "rhs_reversal" in line or "lhs_dilate" in line:
        return "conv input-gradient"
    return "conv forward"


def classify(hlo_text: str) -> dict[str, str]:
    """Instruction name -> kind, for every instruction of an optimised HLO module's text.

    A fusion takes the kind of the convolution or library call inside it when
    it has one (XLA names fusions after their root), else "elementwise fusion".
    """
    kinds: dict[str, str] = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, opcode = match.groups()
        if opcode == "custom-call":
            target = re.search(r'custom_call_target="([^"]+)"', line)
            kind = next((k for key, k in _CUSTOM_TARGETS.items() if target and key in target.group(1)), "other")
        elif opcode == "convolution":
            kind = _conv_kind(line)
        elif opcode in ("select-and-scatter", "reduce-window"):
            kind = "pooling"
        elif opcode == "dot":
            kind = "matmul"
        elif opcode in ("copy", "transpose", "copy-start", "copy-done"):
            kind = "copy/transpose"
        elif opcode == "fusion":
            kind = "conv forward" if "convolution" in name else "elementwise fusion"
        else:
            kind = "other"
        kinds[name] = kind
    return kinds


def trace_events(directory: str) -> list[dict[str, Any]]:
    """The complete ("X") events of the newest Perfetto trace under `directory`."""
    paths = sorted(glob.glob(os.path.join(directory, "**", "perfetto_trace.json.gz"), recursive=True), key=os.path.getmtime)
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


def summarise(events: Iterable[dict[str, Any]], kinds: dict[str, str], steps: int, module: str = "") -> list[tuple[str, float, float]]:
    """(kind, milliseconds per step, share) for the events that are HLO instructions of the step, largest first.

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


def profile(run_step: Callable[[], Any], hlo_text: str, directory: str, steps: int = 3) -> list[tuple[str, float, float]]:
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


def render(rows: list[tuple[str, float, float]]) -> str:
    """The summary as a Markdown table."""
    lines = ["| kind | ms per step | share |", "|---|---|---|"]
    lines += [f"| {kind} | {ms:.3f} | {share:.1%} |" for kind, ms, share in rows]
    return "\n".join(lines)
