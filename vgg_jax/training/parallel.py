"""Data parallelism on JAX's own runtime: a 1-D `data` mesh, sharded batches, replicated state.

The paper trained on 4 GPUs, each taking a slice of every batch. Here the same
jitted step runs on 1 or N devices, on one host or many:

- `make_mesh(n)`: a 1-D mesh named `data` over all devices, or `n` of them
  (an equal number from each process).
- Batches are sharded on their leading axis (`batch_sharding`); each process
  feeds its own rows (`put_batch`), so a Grain loader sharded by
  `jax.process_index()` is all a host needs.
- The train state is replicated, or with `shard_fc=True` the FC kernels (fc6
  alone is 392 MB in fp32) and every optimizer-state leaf that mirrors them are
  split over the devices on their output axis (`state_sharding`).
- `jit_train_step` jits `vgg_jax.training.step.train_step` with explicit in and out
  shardings; XLA inserts the gradient all-reduce (and, with BN, the global
  batch statistics).
- `initialize()` starts `jax.distributed` when flags or the environment ask
  for several processes. `is_primary()` says which process writes logs.

CPU collectives across processes use JAX's gloo implementation, the default
of `jax_cpu_collectives_implementation` in jax 0.10; nothing here sets it.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vgg_jax.model.vgg import CLASSIFIER
from vgg_jax.util.options import FieldError

DATA_AXIS = "data"
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = (
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
)


def initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
) -> bool:
    """Starts `jax.distributed` when several processes are asked for; returns whether it did.

    Asked for by the arguments, by `JAX_COORDINATOR_ADDRESS`,
    `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, or by a SLURM or Open MPI job of
    more than one task (JAX detects those itself). Call it before anything
    touches a device. One process and no flags: does nothing.
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR)
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    cluster = _env_int("SLURM_NTASKS", 1) > 1 or _env_int("OMPI_COMM_WORLD_SIZE", 1) > 1
    if coordinator_address is None and num_processes is None and process_id is None and not cluster:
        return False
    if not cluster and None in (coordinator_address, num_processes, process_id):
        raise ValueError(
            "a multi-process run needs the coordinator address (host:port of process 0), the number of "
            "processes "
            f"and this process's id: pass all three flags or set {ENV_COORDINATOR}, {ENV_NUM_PROCESSES} and "
            f"{ENV_PROCESS_ID}"
        )
    if num_processes is not None and (
        num_processes < 1 or process_id is None or not 0 <= process_id < num_processes
    ):
        raise ValueError(
            f"process id must be in [0, {num_processes}) for {num_processes} processes, got {process_id}"
        )
    if num_processes == 1:
        return False
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True


def _env_int(name: str, default: Optional[int] = None) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def is_primary() -> bool:
    """True in the process that writes logs, configs and reports (process 0)."""
    return jax.process_index() == 0


def make_mesh(devices: Optional[int] = None) -> Mesh:
    """A 1-D `data` mesh over every device, or over `devices` of them, the same number from each process."""
    processes = jax.process_count()
    available = jax.device_count()
    if devices is None:
        devices = available
    if (
        isinstance(devices, bool)
        or not isinstance(devices, (int, np.integer))
        or not 1 <= devices <= available
    ):
        raise FieldError(
            "devices", f"must be between 1 and the {available} devices available, got {devices!r}"
        )
    if devices % processes:
        raise FieldError(
            "devices", f"{devices} does not divide among {processes} processes; use a multiple of {processes}"
        )
    per_process = devices // processes
    chosen = [device for index in range(processes) for device in _process_devices(index)[:per_process]]
    return Mesh(np.array(chosen), (DATA_AXIS,))


def _process_devices(index: int) -> list[Any]:
    return sorted((d for d in jax.devices() if d.process_index == index), key=lambda d: d.id)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the `data` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def check_global_batch(batch_size: int, mesh: Mesh) -> None:
    """A clear error when the global batch cannot be split evenly over the mesh."""
    devices = mesh.devices.size
    if batch_size % devices:
        lower = max(devices, batch_size // devices * devices)
        raise ValueError(
            f"the global batch of {batch_size} does not divide over {devices} devices; use a multiple of "
            f"{devices} "
            f"(for example {lower} or {lower + devices}) or change --devices"
        )


def state_sharding(tree: Any, mesh: Mesh, shard_fc: bool = False) -> Any:
    """The sharding of every leaf of a train state (or params, grads, optimizer state).

    Replicated, except with `shard_fc`: each 2-D `kernel` under fc6, fc7 or
    fc8, wherever it sits in the tree (params, momentum, any optax state that
    mirrors the params), is split on its output axis, or on its input axis
    when only that divides by the device count.
    """
    devices = mesh.devices.size

    def spec(path: tuple, leaf: Any) -> NamedSharding:
        keys = [getattr(entry, "key", None) for entry in path]
        shape = np.shape(leaf)
        if (
            shard_fc
            and devices > 1
            and len(shape) == 2
            and keys
            and keys[-1] == "kernel"
            and any(k in CLASSIFIER for k in keys)
        ):
            if shape[1] % devices == 0:
                return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))
            if shape[0] % devices == 0:
                return NamedSharding(mesh, PartitionSpec(DATA_AXIS, None))
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(spec, tree)


def put(tree: Any, shardings: Any) -> Any:
    """Places a tree whose values are the same in every process onto global shardings.

    `shardings` is the tree's structure or a prefix of it (one sharding for a
    whole subtree). Works with one process or many: each device gets its slice
    of the host value.
    """

    def place(value: Any, sharding: NamedSharding) -> jax.Array:
        if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(
                place(jax.random.key_data(value), sharding), impl=jax.random.key_impl(value)
            )
        if jax.process_count() == 1 or (isinstance(value, jax.Array) and not value.is_fully_addressable):
            return jax.device_put(value, sharding)
        host = np.asarray(jax.device_get(value))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(
        lambda sharding, subtree: jax.tree.map(lambda v: place(v, sharding), subtree), shardings, tree
    )


def reshard(tree: Any, shardings: Any) -> Any:
    """`put`, leaving alone the leaves already placed as asked (after a host-side change to a few leaves)."""
    return jax.tree.map(
        lambda value, sharding: (
            value if isinstance(value, jax.Array) and value.sharding == sharding else put(value, sharding)
        ),
        tree,
        shardings,
    )


def barrier(name: str) -> None:
    """Waits until every process reaches this point (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def put_state(state: Any, mesh: Mesh, shard_fc: bool = False) -> Any:
    """The train state on the mesh: replicated, or FC-sharded with `shard_fc`."""
    return put(state, state_sharding(state, mesh, shard_fc))


def put_batch(batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows of a batch as global arrays split over the mesh.

    Each process passes its own rows (the global batch over the process
    count); one process passes the whole batch.
    """
    processes = jax.process_count()
    arrays = {}
    for name, value in batch.items():
        value = np.asarray(value)
        check_global_batch(value.shape[0] * processes, mesh)
        arrays[name] = jax.make_array_from_process_local_data(batch_sharding(mesh), value)
    return arrays


def jit_train_step(step: Callable, mesh: Mesh, state: Any, shard_fc: bool = False) -> Callable:
    """A step such as `vgg_jax.training.step.train_step(model, optimizer)`, jitted for the mesh with explicit
    shardings and the state donated.

    `state` gives the tree structure (a template; it is not consumed).
    """
    shardings = state_sharding(state, mesh, shard_fc)
    return jax.jit(
        step,
        in_shardings=(shardings, batch_sharding(mesh), replicated(mesh)),
        out_shardings=(shardings, replicated(mesh)),
        donate_argnums=0,
    )


def to_local(tree: Any) -> Any:
    """Every leaf whole, on this process's first device (for evaluation and export).

    A replicated leaf costs nothing; a sharded one is gathered (across
    processes through `multihost_utils.process_allgather`).
    """
    device = jax.local_devices()[0]

    def local(value: Any) -> Any:
        if not isinstance(value, jax.Array):
            return value
        if value.is_fully_replicated:
            return value.addressable_data(0)
        if value.is_fully_addressable:
            return jax.device_put(value, device)
        from jax.experimental import multihost_utils

        return jax.device_put(multihost_utils.process_allgather(value, tiled=True), device)

    return jax.tree.map(local, tree)


def sum_over_processes(values: np.ndarray) -> np.ndarray:
    """Element-wise sum of a small host array over every process (itself with one process)."""
    if jax.process_count() == 1:
        return np.asarray(values)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(values))).sum(axis=0)


def any_process(flag: bool) -> bool:
    """Whether `flag` is set on any process (itself with one process): a stop request every process acts
    on."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.array([flag], np.int32))).any())


def gather_strings(text: str) -> list[str]:
    """Every process's `text`, in process order (for per-process data-iterator states in checkpoints)."""
    if jax.process_count() == 1:
        return [text]
    from jax.experimental import multihost_utils

    encoded = np.frombuffer(text.encode(), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.array([encoded.size], np.int32))).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: encoded.size] = encoded
    rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
    return [bytes(row[:length]).decode() for row, length in zip(rows, lengths)]
