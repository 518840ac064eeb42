"""Timing primitives for jitted steps: compile ahead of time, warm up, time in alternating rounds, summarise.

What XLA reports about a compiled program (its FLOPs and memory) is read here
too. `vgg_jax.benchmark.bench` builds the VGG cases on top of these.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class Stepper:
    """Calls a compiled executable once per step and waits for its result.

    With `carries_state`, the first argument is donated and replaced by the
    first output, as a train step's state is.
    """

    def __init__(self, compiled: Callable, args: Sequence[Any], carries_state: bool):
        self.compiled, self.args, self.carries_state = compiled, list(args), carries_state

    def step(self) -> None:
        out = self.compiled(*self.args)
        jax.block_until_ready(out)
        if self.carries_state:
            self.args[0] = out[0]


def compile_step(
    function: Callable, args: Sequence[Any], in_shardings: Any, out_shardings: Any, carries_state: bool
) -> tuple[Stepper, Any, float, list[int]]:
    """Jits, lowers and compiles `function` for `args`: (stepper, compiled, lower seconds, trace counter).

    The counter's one element counts the traces of `function`: a benchmark
    asserts it stays at 1 (nothing is retraced while timing).
    """
    traces = [0]

    def counted(*inputs: Any) -> Any:
        traces[0] += 1
        return function(*inputs)

    jitted = jax.jit(
        counted,
        in_shardings=in_shardings,
        out_shardings=out_shardings,
        donate_argnums=(0,) if carries_state else (),
    )
    begin = time.perf_counter()
    lowered = jitted.lower(*args)
    lower_s = time.perf_counter() - begin
    compiled = lowered.compile()
    return Stepper(compiled, args, carries_state), compiled, lower_s, traces


def warm_up(steps: Sequence[Callable[[], None]], count: int) -> None:
    """`count` untimed calls of each step, in turn."""
    for _ in range(count):
        for step in steps:
            step()


def time_interleaved(
    steps: Sequence[Callable[[], None]], count: int, progress: Optional[Callable[[], None]] = None
) -> list[list[float]]:
    """Times `count` calls of each step, alternating between them in rounds; seconds per call, per step.

    Alternation spreads the machine's drift (other load, clocks) over every
    implementation instead of favouring whichever ran first.
    """
    rounds = min(count, 10)
    bounds = np.linspace(0, count, rounds + 1).astype(int)
    times: list[list[float]] = [[] for _ in steps]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        for index, step in enumerate(steps):
            for _ in range(stop - start):
                begin = time.perf_counter()
                step()
                times[index].append(time.perf_counter() - begin)
                if progress is not None and index == 0:
                    progress()
    return times


def summarise(times: Sequence[float]) -> dict[str, float]:
    """Median (the figure to quote on a noisy machine), mean, standard deviation and minimum, in seconds."""
    return {
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "std_s": statistics.pstdev(times),
        "min_s": min(times),
    }


def dispatch_overhead(device: Any, steps: int = 50) -> float:
    """Median seconds of a trivial jitted call, timed like a step: the host's share of a step."""
    value = jax.device_put(jnp.zeros((), jnp.float32), device)
    stepper = Stepper(jax.jit(lambda x: x + 1).lower(value).compile(), (value,), False)
    warm_up([stepper.step], 3)
    return statistics.median(time_interleaved([stepper.step], steps)[0])


def xla_flops(compiled: Any) -> Optional[float]:
    """XLA's cost analysis of a compiled program, in FLOPs; None where the backend has none."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # not every backend implements it
        return None
    if isinstance(cost, (list, tuple)):  # older jax returns one dict per program
        cost = cost[0] if cost else None
    flops = cost.get("flops") if cost else None
    return float(flops) if flops is not None and flops > 0 else None


def memory(compiled: Any) -> dict[str, Optional[int]]:
    """XLA's memory analysis of a compiled program: argument, output and temporary bytes (None where
    unknown)."""
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


def is_out_of_memory(error: Exception) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text
