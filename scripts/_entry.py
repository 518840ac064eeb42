"""What every script here does: run the command of the same name in `vgg_jax.cli`.

The scripts are thin wrappers kept for the paths the README names; the
commands themselves live in the package, where `pip install` also makes them
console commands (`vgg-jax-bench`, `vgg-jax-train`, ...).
"""

import importlib
import sys


def run(command: str) -> None:
    """Exits with the status of `vgg_jax.cli.<command>.main()`; one line if vgg_jax is not importable."""
    try:
        module = importlib.import_module(f"vgg_jax.cli.{command}")
    except ModuleNotFoundError as error:
        if error.name not in ("vgg_jax", "vgg_jax.cli"):
            raise
        sys.exit(
            f"{command}.py: error: vgg_jax is not installed; run `pip install -e .` in the repository "
            "(or set PYTHONPATH to the repository)"
        )
    sys.exit(module.main())
