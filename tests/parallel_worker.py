"""Runs data-parallel train steps in its own process, for tests/test_parallel.py.

    python tests/parallel_worker.py OUT.npz=DEVICES[,fc] [OUT.npz=DEVICES[,fc] ...]
        [--process-id I --num-processes N --port P]

The process's device count comes from XLA_FLAGS, set by the test. Each run
(several in one process save a process start each: a mesh of 1 device and one
of 8 in a process of 8) feeds each process's own rows of one fixed global
batch to a mesh of DEVICES devices (`fc`: fc6 sharded over them), runs STEPS
steps of a tiny BN VGG, and saves the state after the first and the last step
(gathered, on every process) to OUT.npz; the last stdout line is a JSON list
with what the test checks, one entry per run.
"""

import argparse
import json

GLOBAL_BATCH, STEPS = 16, 3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", help="OUT.npz=DEVICES or OUT.npz=DEVICES,fc")
    parser.add_argument("--process-id", type=int, default=None)
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()

    from vgg_jax.training import parallel

    if args.num_processes:
        parallel.initialize(f"127.0.0.1:{args.port}", args.num_processes, args.process_id)

    import jax

    jax.config.update("jax_threefry_partitionable", False)
    infos = []
    for run in args.runs:
        out, spec = run.rsplit("=", 1)
        devices, _, fc = spec.partition(",")
        infos.append(train_and_save(out, int(devices), fc == "fc"))
    print(json.dumps(infos))
    if args.num_processes:
        jax.distributed.shutdown()


def train_and_save(out: str, devices: int, shard_fc: bool) -> dict:
    import jax
    import numpy as np

    from vgg_jax import VGG
    from vgg_jax.training import parallel
    from vgg_jax.training import step as train

    model = VGG("A", num_classes=10, width_scale=1 / 16, fc_width=64, batch_norm=True)
    rng = np.random.RandomState(0)
    images = rng.randn(GLOBAL_BATCH, 32, 32, 3).astype(np.float32)
    labels = (np.arange(GLOBAL_BATCH) % 10).astype(np.int32)
    variables = model.init(jax.random.key(0), images[:1])
    optimizer = train.paper_optimizer(0.01)
    mesh = parallel.make_mesh(devices)
    state = parallel.put_state(train.create_train_state(model, optimizer, variables), mesh, shard_fc)
    step = parallel.jit_train_step(train.train_step(model, optimizer), mesh, state, shard_fc)
    key = parallel.put(jax.random.key(1), parallel.replicated(mesh))
    rows = GLOBAL_BATCH // jax.process_count()
    mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
    losses, flat = [], {}
    for index in range(STEPS):
        state, metrics = step(
            state, parallel.put_batch({"image": images[mine], "label": labels[mine]}, mesh), key
        )
        losses.append(float(metrics["loss"]))
        if index in (0, STEPS - 1):  # the state after the first and after the last step
            local = jax.device_get(parallel.to_local(state))
            for path, leaf in jax.tree_util.tree_leaves_with_path(local):
                flat[f"step{index + 1}{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
    np.savez(out, **flat)
    fc6 = state.params["fc6"]["kernel"]
    momentum = state.opt_state.inner_state[1][0].trace["fc6"]["kernel"]
    return {
        "devices": mesh.devices.size,
        "processes": jax.process_count(),
        "losses": losses,
        "fc6_spec": list(fc6.sharding.spec),
        "fc6_momentum_spec": list(momentum.sharding.spec),
        "fc6_shard_shape": list(fc6.addressable_shards[0].data.shape),
    }


if __name__ == "__main__":
    main()
