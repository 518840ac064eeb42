"""Runs `vgg_jax.cli.train` with its host-side collectives counted, for tests/test_parallel.py.

    python tests/collectives_worker.py COUNTS.json TRAIN.PY-FLAGS...

Every call of `jax.experimental.multihost_utils` (the gathers and barriers a
host waits on) is recorded with the number of train steps run before it, and
the list is written to COUNTS.json as `[[steps_done, name], ...]` when the
command returns; the process exits with the command's status.
"""

import json
import sys


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    from jax.experimental import multihost_utils

    from vgg_jax.cli import train
    from vgg_jax.training import parallel

    calls, steps = [], [0]

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls.append((steps[0], name))
            return function(*args, **kwargs)

        return wrapper

    for name in ("process_allgather", "sync_global_devices", "broadcast_one_to_all"):
        setattr(multihost_utils, name, counted(name, getattr(multihost_utils, name)))
    jit_train_step = parallel.jit_train_step

    def counting_jit_train_step(*args, **kwargs):
        step = jit_train_step(*args, **kwargs)

        def run(*step_args):
            steps[0] += 1
            return step(*step_args)

        return run

    parallel.jit_train_step = counting_jit_train_step
    status = train.main(argv)
    with open(out, "w") as file:
        json.dump(calls, file)
    return status


if __name__ == "__main__":
    sys.exit(main())
