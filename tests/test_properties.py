"""Bad input, swept with hypothesis over every public entry point and every CLI flag.

The property everywhere: bad input raises ValueError or TypeError whose message
names the argument (or exits non-zero with one line on stderr), never a bare
XLA, KeyError or IndexError traceback, never a silent wrong result, and leaves
no file behind. Examples are bounded (derandomized, so CI is repeatable);
`VGG_JAX_HYPOTHESIS_EXAMPLES=500` sweeps wider by hand. The counts of inputs
tried are printed at the end of the test session (conftest.py).
"""

import collections
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, tiny_vgg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vgg_jax import VGG
from vgg_jax.model.configs import ALIASES, CONFIGS, layer_names
from vgg_jax.research.warm_start import warm_start
from vgg_jax.util import images as images_lib
from vgg_jax.weights import formats as weights
from vgg_jax.weights import torchvision_format

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = int(os.environ.get("VGG_JAX_HYPOTHESIS_EXAMPLES", "0"))
TRIED: collections.Counter = collections.Counter()  # bad inputs tried per entry point, reported by conftest


@pytest.fixture(autouse=True)
def _report_bad_inputs(record_property):
    """Each test's count of bad inputs, as a user property: conftest sums them, in serial and in xdist
    runs."""
    before = TRIED.copy()
    yield
    for name, count in (TRIED - before).items():
        record_property(f"bad inputs: {name}", count)


def sweep(examples: int):
    return settings(
        max_examples=EXAMPLES or examples,
        deadline=None,
        derandomize=not EXAMPLES,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.filter_too_much,
        ],
    )


def refused(error: BaseException, *names: str) -> None:
    """The error is a ValueError/TypeError naming one of `names`, on one line."""
    assert isinstance(error, (ValueError, TypeError)), f"{type(error).__name__}: {error}"
    message = str(error).lower()
    assert any(name.lower() in message for name in names), f"{error!r} names none of {names}"


# ----------------------------------------------------------------------------- VGG(...) fields

ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from([jnp.int32, jnp.float16, jnp.bfloat16, "float32", np.uint8, object()]),
    st.lists(st.integers(), max_size=2),
)
FIELDS = {
    "config": st.one_of(st.sampled_from(list(CONFIGS) + list(ALIASES) + ["vgg17", "F", "", "d"]), ANYTHING),
    "num_classes": ANYTHING,
    "dropout_rate": ANYTHING,
    "batch_norm": ANYTHING,
    "fc_width": ANYTHING,
    "width_scale": ANYTHING,
    "init_scheme": st.one_of(st.sampled_from(["glorot", "paper", "kaiming", "he", "Glorot"]), ANYTHING),
    "dtype": ANYTHING,
    "param_dtype": ANYTHING,
    "conv_impl": st.one_of(st.sampled_from(["auto", "xla", "custom_vjp", "cudnn"]), ANYTHING),
    "remat": ANYTHING,
}


@sweep(150)
@given(
    st.dictionaries(st.sampled_from(sorted(FIELDS)), st.none(), min_size=1, max_size=3).flatmap(
        lambda keys: st.fixed_dictionaries({key: FIELDS[key] for key in keys})
    )
)
def test_vgg_fields(fields):
    try:
        model = VGG(**fields)
    except Exception as error:  # noqa: BLE001 - the property is about which exceptions
        TRIED["VGG(...) fields"] += 1
        refused(error, *fields, "config")
        return
    # Accepted: the shapes of a forward pass on 32-pixel images must follow (traced, not compiled).
    out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], jnp.zeros((1, 32, 32, 3)))
    assert out.shape == (1, model.num_classes) and out.dtype == jnp.float32


# ----------------------------------------------------------------------------- apply with bad images


@pytest.fixture(scope="module")
def tiny_a_shapes():
    model = tiny_vgg("A")
    return model, model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


@sweep(120)
@given(
    st.lists(st.integers(0, 70), min_size=0, max_size=5),
    st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16, jnp.int32, jnp.uint8, jnp.bool_, jnp.complex64]),
    st.booleans(),
    st.booleans(),
)
def test_apply_with_any_shape_and_dtype(tiny_a_shapes, shape, dtype, train, dense):
    model, variables = tiny_a_shapes
    images = jax.ShapeDtypeStruct(tuple(shape), dtype)
    valid = (
        len(shape) == 4
        and shape[0] >= 1
        and shape[1] == shape[2] == 32
        and shape[3] == 3
        and jnp.issubdtype(dtype, jnp.floating)
    )
    rngs = {"dropout": jax.random.key(1)}
    try:
        out = jax.eval_shape(lambda x: model.apply(variables, x, train=train, dense=dense, rngs=rngs), images)
    except Exception as error:  # noqa: BLE001
        TRIED["apply images"] += 1
        assert not valid, f"valid input {shape} {dtype} refused: {error}"
        refused(error, "images", "dense", "channels", "fc6")
        return
    assert len(shape) == 4 and shape[3] == 3 and jnp.issubdtype(dtype, jnp.floating) and min(shape[1:3]) >= 32
    assert out.shape == (shape[0], TINY["num_classes"]) and out.dtype == jnp.float32


# ----------------------------------------------------------------------------- features names


@sweep(80)
@given(
    st.one_of(
        st.text(max_size=10),
        st.lists(st.one_of(st.sampled_from(layer_names("A")), st.text(max_size=8)), max_size=4),
    )
)
def test_features_names(tiny_a_shapes, layers):
    model, variables = tiny_a_shapes
    try:
        out = jax.eval_shape(
            lambda x: model.apply(variables, x, layers=layers, method=VGG.features), jnp.zeros((1, 32, 32, 3))
        )
    except Exception as error:  # noqa: BLE001
        TRIED["features names"] += 1
        refused(error, "layer names")
        return
    wanted = [layers] if isinstance(layers, str) else list(layers)
    assert wanted and set(out) == set(wanted) and set(wanted) <= set(layer_names("A"))


# ----------------------------------------------------------------------------- warm_start between configs


@pytest.fixture(scope="module")
def source_a():
    return tiny_vgg("A").init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


@sweep(12)
@given(
    st.sampled_from(list(CONFIGS) + ["vgg17"]),
    st.one_of(
        st.sampled_from(["paper", "matching", "sideways"]),
        st.lists(st.sampled_from(["conv1_1", "conv3_2", "fc6", "fc9", "lrn"]), max_size=3),
    ),
    st.sampled_from([{}, {"batch_norm": True}, {"width_scale": 1 / 8}, {"num_classes": 7}, {"fc_width": 16}]),
)
def test_warm_start_between_configs(source_a, target, layers, change):
    kwargs = {**TINY, **change}
    try:
        variables, report = warm_start(
            source_a, "A", target, jax.random.key(1), layers=layers, image_size=32, **kwargs
        )
    except Exception as error:  # noqa: BLE001
        TRIED["warm_start"] += 1
        refused(error, "layer", "config", "shape", "warm", "batch_norm", "width", "classes", "fc")
        return
    # Whatever was copied equals the source, bit for bit.
    for name in report.copied:
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(variables["params"][name][leaf], source_a["params"][name][leaf])


# ----------------------------------------------------------------------------- loaders with bad files


@pytest.fixture(scope="module")
def good_files(tmp_path_factory, source_a):
    directory = tmp_path_factory.mktemp("weights")
    files = {}
    for suffix in (".msgpack", ".safetensors"):
        path = str(directory / f"a{suffix}")
        weights.save(source_a, path)
        files[suffix] = open(path, "rb").read()
    return files


@sweep(60)
@given(
    st.sampled_from([".msgpack", ".safetensors", ".h5", ".pth", ".bin", ""]),
    st.one_of(st.binary(max_size=64), st.sampled_from(["truncate", "flip", "wrong-config"])),
)
def test_loaders_with_wrong_truncated_or_mismatched_files(tmp_path_factory, good_files, suffix, content):
    directory = tmp_path_factory.mktemp("bad")
    path = str(directory / f"w{suffix}")
    config = "A"
    if isinstance(content, str) and suffix in good_files:
        data = good_files[suffix]
        if content == "truncate":
            data = data[: len(data) // 3]
        elif content == "flip":
            data = data[:16] + bytes(b ^ 0xFF for b in data[16:48]) + data[48:]
        else:
            config = "E"  # a real file of A loaded as E
        content = data
    elif isinstance(content, str):
        content = b"\x00" * 10
    with open(path, "wb") as file:
        file.write(content)
    try:
        loaded = weights.load(path, config=config)
    except Exception as error:  # noqa: BLE001
        TRIED["weight loaders"] += 1
        refused(error, path, "weights", "does not match", "format")
        return
    # Accepted: it must be the real file, loaded whole (a flip inside a float is still a float).
    assert suffix in good_files and config == "A"
    assert jax.tree.structure(loaded["params"]) == jax.tree.structure(
        jax.device_get(tiny_vgg("A").init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"])
    )


@sweep(40)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "features.0.weight",
                "features.0.bias",
                "classifier.0.weight",
                "classifier.6.weight",
                "junk",
                "features.99.weight",
            ]
        ),
        st.lists(st.integers(1, 4), min_size=1, max_size=4),
        max_size=5,
    )
)
def test_from_torchvision_with_mismatched_state_dicts(state_shapes):
    state = {key: np.zeros(shape, np.float32) for key, shape in state_shapes.items()}
    with pytest.raises((ValueError, TypeError)) as error:
        torchvision_format.from_torchvision(state, "D")
    TRIED["from_torchvision"] += 1
    refused(error.value, "does not match", "missing", "classifier")


# ----------------------------------------------------------------------------- preprocess


@sweep(80)
@given(
    st.one_of(st.sampled_from(["torch", "caffe", "paper"]), st.text(max_size=6)),
    st.lists(st.integers(0, 5), min_size=0, max_size=5),
    st.sampled_from([np.uint8, np.float32, np.float64, np.int32, np.bool_]),
    st.sampled_from([None, "nan", "inf"]),
    st.one_of(st.none(), st.tuples(st.floats(0, 255), st.floats(0, 255), st.floats(0, 255))),
)
def test_preprocess_modes(mode, shape, dtype, poison, mean_rgb):
    images = np.ones(shape, dtype)
    if poison and np.issubdtype(dtype, np.floating) and images.size:
        images.flat[0] = np.nan if poison == "nan" else np.inf
    try:
        out = images_lib.preprocess(images, mode, mean_rgb=mean_rgb)
    except Exception as error:  # noqa: BLE001
        TRIED["preprocess"] += 1
        refused(error, "preprocess", "mode", "mean_rgb")
        return
    assert len(shape) == 4 and shape[-1] == 3 and mode in ("torch", "caffe", "paper")
    assert bool(jnp.all(jnp.isfinite(out))) and out.shape == tuple(shape)


# ----------------------------------------------------------------------------- CLI flags

from vgg_jax.cli import bench as bench_cli  # noqa: E402
from vgg_jax.cli import convert_weights as convert_cli  # noqa: E402
from vgg_jax.cli import train as train_cli  # noqa: E402

# Values each kind of flag must refuse (tyro's type check, or the validation behind it).
POSITIVE_INTS = st.sampled_from(["-1", "0", "abc", "", "3.5", "0x10", "99999999999999999999", "1e3"])
NON_NEGATIVE_INTS = st.sampled_from(["-1", "abc", "", "3.5", "99999999999999999999", "-0.5"])
POSITIVE_FLOATS = st.sampled_from(["-1", "0", "nan", "inf", "-inf", "abc", "", "1e999"])
NON_NEGATIVE_FLOATS = st.sampled_from(["-1", "nan", "inf", "abc", "", "1e999", "-1e-9"])
BAD_WORDS = st.sampled_from(["", "bogus", "D,Z", "float16", "tf", ",", "all,", "-1", "vgg17"])


def run_cli(main, argv, capsys):
    """Runs a script's main in-process; returns (status, stderr lines)."""
    try:
        status = main(argv)
    except SystemExit as exit:
        status = exit.code
    err = capsys.readouterr().err
    return status, [line for line in err.splitlines() if line.strip()]


def refused_cleanly(prog, status, lines, flag=None):
    """A bad flag ends with status 2 and either the library's one line (`PROG: error: ...`) or tyro's own
    message for a value its parser refuses, naming the flag; never a traceback."""
    text = "\n".join(lines)
    assert status == 2 and "Traceback" not in text, (status, text)
    if len(lines) == 1:
        assert lines[0].startswith(f"{prog}: error:"), lines
    else:  # tyro's box: what was wrong, about which flag
        assert any(word in text.lower() for word in ("error", "invalid", "unrecognized", "missing")), text
        assert flag is None or flag in text, (flag, text)


TRAIN_FLAGS = {
    "--image-size": st.sampled_from(["16", "31", "-1", "abc", "", "99999", "3.5"]),
    "--epochs": POSITIVE_INTS,
    "--max-steps": POSITIVE_INTS,
    "--batch-size": POSITIVE_INTS,
    "--lr": POSITIVE_FLOATS,
    "--plateau-patience": POSITIVE_INTS,
    "--weight-decay": NON_NEGATIVE_FLOATS,
    "--width-scale": POSITIVE_FLOATS,
    "--fc-width": POSITIVE_INTS,
    "--dropout": st.sampled_from(["1", "1.5", "-0.1", "nan", "x"]),
    "--seed": st.sampled_from(["-1", "abc", "", "3.5", "99999999999999999999"]),
    "--scale": st.sampled_from(["8", "64,32", "a,b", "", "1,2,3", "-5"]),
    "--pca-std": NON_NEGATIVE_FLOATS,
    "--eval-scales": st.sampled_from(["8", "", "x", "16,8"]),
    "--eval-every": NON_NEGATIVE_INTS,
    "--checkpoint-every": NON_NEGATIVE_INTS,
    "--keep": POSITIVE_INTS,
    "--log-every": POSITIVE_INTS,
    "--workers": NON_NEGATIVE_INTS,
    "--skip-nonfinite": NON_NEGATIVE_INTS,
    "--devices": POSITIVE_INTS,
    "--config": BAD_WORDS,
    "--data": BAD_WORDS,
    "--lr-policy": BAD_WORDS,
    "--dtype": BAD_WORDS,
    "--init": BAD_WORDS,
    "--eval": BAD_WORDS,
    "--init-from": st.sampled_from(["", "no/such/run"]),
    "--num-processes": POSITIVE_INTS,
    "--process-id": NON_NEGATIVE_INTS | st.just("0"),
}


@sweep(120)
@given(st.sampled_from(sorted(TRAIN_FLAGS)).flatmap(lambda flag: st.tuples(st.just(flag), TRAIN_FLAGS[flag])))
def test_train_cli_bad_flags(tmp_path_factory, capsys, flag_value):
    flag, value = flag_value
    workdir = tmp_path_factory.mktemp("train") / "run"
    argv = ["--workdir", str(workdir), "--max-steps", "1", "--data", "synthetic", flag, value]
    if flag == "--max-steps":
        argv = ["--workdir", str(workdir), "--data", "synthetic", flag, value]
    status, lines = run_cli(train_cli.main, argv, capsys)
    TRIED["train.py flags"] += 1
    assert status not in (0, None), f"{flag} {value!r} was accepted"
    refused_cleanly("train.py", status, lines, flag)
    assert not workdir.exists() or not any(workdir.iterdir()), (
        f"{flag} {value!r} left files: {list(workdir.iterdir())}"
    )


BENCH_FLAGS = {
    "--config": BAD_WORDS,
    "--batch-size": st.sampled_from(["0", "-2", "two", "", "4,0", "3.5", "99999999999"]),
    "--steps": POSITIVE_INTS,
    "--warmup": NON_NEGATIVE_INTS,
    "--image-size": st.sampled_from(["16", "-1", "abc", "99999", "3.5"]),
    "--dtype": BAD_WORDS,
    "--mode": BAD_WORDS,
    "--vs": BAD_WORDS,
    "--peak-tflops": POSITIVE_FLOATS,
    "--conv-impl": BAD_WORDS,
    "--width-scale": POSITIVE_FLOATS | st.just("1000"),
    "--fc-width": POSITIVE_INTS,
    "--num-classes": POSITIVE_INTS,
    "--devices": POSITIVE_INTS,
    "--cache-dir": st.just(""),
    "--json": st.sampled_from(["/nonexistent-dir/x.json", "", "."]),
    "--plot": st.sampled_from(["/nonexistent-dir/x.png", "", "plot.bmp", "plot"]),
}


@sweep(100)
@given(st.sampled_from(sorted(BENCH_FLAGS)).flatmap(lambda flag: st.tuples(st.just(flag), BENCH_FLAGS[flag])))
def test_bench_cli_bad_flags(tmp_path, capsys, monkeypatch, flag_value):
    flag, value = flag_value
    monkeypatch.chdir(tmp_path)
    argv = [
        "--config",
        "A",
        "--image-size",
        "32",
        "--width-scale",
        "0.0625",
        "--fc-width",
        "8",
        "--steps",
        "1",
        flag,
        value,
    ]

    status, lines = run_cli(bench_cli.main, argv, capsys)
    TRIED["bench.py flags"] += 1
    assert status not in (0, None), f"{flag} {value!r} was accepted"
    refused_cleanly("bench.py", status, lines, flag)
    assert os.listdir(tmp_path) == []


@sweep(40)
@given(
    st.sampled_from(["missing.pth", "x.h5", "", "dir/", "same"]),
    st.sampled_from(["out.msgpack", "out.safetensors", "", "existing.msgpack", "out_dir"]),
    st.sampled_from(
        [[], ["--config", "Z"], ["--config", "C"], ["--batch-norm", "--no-batch-norm"], ["--bogus"]]
    ),
)
def test_convert_weights_cli_bad_input(tmp_path_factory, capsys, good_files, src, dst, extra):
    directory = tmp_path_factory.mktemp("convert")
    (directory / "existing.msgpack").write_bytes(b"keep me")
    (directory / "x.h5").write_bytes(b"not hdf5")
    src_path = (
        str(directory / src)
        if src not in ("", "same")
        else (src if src == "" else str(directory / "existing.msgpack"))
    )
    dst_path = str(directory / dst) if dst else ""
    before = sorted(os.listdir(directory))
    status, lines = run_cli(convert_cli.main, [src_path, dst_path, *extra], capsys)
    TRIED["convert_weights.py flags"] += 1
    assert status not in (0, None)
    refused_cleanly("convert_weights.py", status, lines)
    assert (
        sorted(os.listdir(directory)) == before
        and (directory / "existing.msgpack").read_bytes() == b"keep me"
    )
