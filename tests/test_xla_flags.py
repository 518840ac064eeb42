"""The XLA:CPU flags vgg_jax adds when asked: when, what, and the off switch; importing changes nothing."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = (
    "import os, vgg_jax; print(repr(vgg_jax.apply_xla_cpu_flags())); print(os.environ.get('XLA_FLAGS', ''))"
)


def run(code, **env):
    environment = {
        key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", "VGG_JAX_XLA_CPU_FLAGS")
    }
    environment.update(env, PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done


def probe(code=PROBE, **env):
    return run(code, **env).stdout.splitlines()


def test_flags_are_added_on_measured_versions_and_can_be_turned_off():
    import jaxlib

    applied, flags = probe()
    if jaxlib.__version__.startswith("0.10."):
        assert "ynn_fusion_type" in applied and "ynn_fusion_type" in flags
    else:
        assert applied == "()" and flags == ""
    assert probe(VGG_JAX_XLA_CPU_FLAGS="0") == ["()", ""]


def test_importing_the_library_sets_nothing_and_the_commands_apply_the_flags():
    code = "import os, {}; print(repr(os.environ.get('XLA_FLAGS', '')))"
    assert probe(code.format("vgg_jax, vgg_jax.training.loop"), VGG_JAX_XLA_CPU_FLAGS="1") == ["''"]
    assert "ynn_fusion_type" in probe(code.format("vgg_jax.cli.train"), VGG_JAX_XLA_CPU_FLAGS="1")[0]


def test_a_users_own_setting_wins_and_a_started_backend_is_left_alone():
    own = "--xla_cpu_experimental_ynn_fusion_type=individual_convolution"
    applied, flags = probe(XLA_FLAGS=own, VGG_JAX_XLA_CPU_FLAGS="1")
    assert applied == "()" and flags == own
    started = "import jax; jax.devices(); " + PROBE
    assert probe(started, VGG_JAX_XLA_CPU_FLAGS="1", JAX_PLATFORMS="cpu")[0] == "()"


def test_a_started_cpu_backend_warns_and_a_moved_private_name_is_safe():
    started = "import jax; jax.devices(); import vgg_jax; print(vgg_jax.apply_xla_cpu_flags())"
    done = run(started, VGG_JAX_XLA_CPU_FLAGS="1", JAX_PLATFORMS="cpu")
    assert done.stdout.strip() == "()", done.stderr
    assert (
        done.stderr.count("FlagsNotApplied") == 1
        and "call vgg_jax.apply_xla_cpu_flags() before running anything in JAX" in done.stderr
    )
    moved = (
        "from jax._src import xla_bridge; del xla_bridge.backends_are_initialized; del xla_bridge._backends; "
        "import os, vgg_jax; print(vgg_jax.apply_xla_cpu_flags(), repr(os.environ.get('XLA_FLAGS', '')))"
    )
    done = run(moved, VGG_JAX_XLA_CPU_FLAGS="1", JAX_PLATFORMS="cpu")
    assert done.stdout.strip() == "() ''" and "Warning" not in done.stderr, done.stderr
