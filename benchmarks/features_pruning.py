"""features(..., "pool3") on D, batch 4, 224: the model's early stop against jit's pruning of unused layers.

    python benchmarks/features_pruning.py

Prints a table (median ms of 7 alternating rounds, compile s, XLA's temp
memory and FLOPs) and whether both give the same pool3.
"""

import statistics
import time

import jax
import jax.numpy as jnp

from vgg_jax import VGG, apply_xla_cpu_flags

apply_xla_cpu_flags()  # XLA:CPU's faster convolutions, before JAX starts a backend


def main() -> None:
    model = VGG("D")
    images = jax.random.normal(jax.random.key(0), (4, 224, 224, 3))
    variables = jax.jit(model.init)(jax.random.key(1), images[:1])
    forms = {
        "early stop": lambda v, x: model.apply(v, x, layers="pool3", method=VGG.features)["pool3"],
        "all layers, jit prunes": lambda v, x: model.apply(v, x, method=VGG.features)["pool3"],
    }
    rows = {}
    for name, function in forms.items():
        begin = time.perf_counter()
        compiled = jax.jit(function).lower(variables, images).compile()
        compile_s = time.perf_counter() - begin
        temp = compiled.memory_analysis().temp_size_in_bytes
        flops = compiled.cost_analysis().get("flops", 0.0)
        compiled(variables, images).block_until_ready()
        rows[name] = (compiled, compile_s, temp, flops, [])
    for _ in range(7):  # alternating rounds
        for compiled, _, _, _, times in rows.values():
            begin = time.perf_counter()
            compiled(variables, images).block_until_ready()
            times.append(time.perf_counter() - begin)
    print("| form | median ms | compile s | temp MiB | XLA GFLOP |")
    print("|---|---|---|---|---|")
    for name, (_, compile_s, temp, flops, times) in rows.items():
        median = statistics.median(times) * 1e3
        print(f"| {name} | {median:.1f} | {compile_s:.2f} | {temp / 2**20:.1f} | {flops / 1e9:.1f} |")
    first, second = (row[0](variables, images) for row in rows.values())
    print("equal outputs:", bool(jnp.array_equal(first, second)))


if __name__ == "__main__":
    main()
