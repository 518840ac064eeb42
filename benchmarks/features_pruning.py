"""features(..., "pool3") on D, batch 4, 224: the model's early stop against jit's pruning of unused layers.

    python benchmarks/features_pruning.py

Prints a table (median ms of 7 alternating rounds, compile s, XLA's temp
memory and FLOPs) and whether both give the same pool3.
"""
import statistics, time
import jax, jax.numpy as jnp
import vgg_jax
from vgg_jax import VGG

model = VGG("D")
images = jax.random.normal(jax.random.key(0), (4, 224, 224, 3))
variables = jax.jit(model.init)(jax.random.key(1), images[:1])
early = jax.jit(lambda v, x: model.apply(v, x, layers="pool3", method=VGG.features)["pool3"])
pruned = jax.jit(lambda v, x: model.apply(v, x, method=VGG.features)["pool3"])  # every layer asked for
rows = {}
for name, fn in (("early stop", early), ("all layers, jit prunes", pruned)):
    begin = time.perf_counter(); compiled = fn.lower(variables, images).compile(); compile_s = time.perf_counter() - begin
    memory = compiled.memory_analysis()
    compiled(variables, images).block_until_ready()
    rows[name] = (compiled, compile_s, memory.temp_size_in_bytes, compiled.cost_analysis().get("flops", 0.0), [])
for _ in range(7):  # alternating rounds
    for name, (compiled, *_rest, times) in rows.items():
        begin = time.perf_counter(); compiled(variables, images).block_until_ready(); times.append(time.perf_counter() - begin)
a = rows["early stop"]; b = rows["all layers, jit prunes"]
print("| form | median ms | compile s | temp MiB | XLA GFLOP |")
print("|---|---|---|---|---|")
for name, (_, compile_s, temp, flops, times) in rows.items():
    print(f"| {name} | {statistics.median(times) * 1e3:.1f} | {compile_s:.2f} | {temp / 2**20:.1f} | {flops / 1e9:.1f} |")
print("equal outputs:", bool(jnp.array_equal(a[0](variables, images), b[0](variables, images))))
