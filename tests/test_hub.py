"""Downloads into the cache, against a local HTTP server on 127.0.0.1 (never the internet)."""

import hashlib
import http.server
import os
import threading

import pytest

from vgg_jax.weights import hub

PAYLOAD = os.urandom(3 * 2**20 + 123)  # a few chunks
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """Serves PAYLOAD at any path; `truncate` sends a full Content-Length and half the body, then closes."""

    def __init__(self):
        self.requests, self.truncate, self.body, self.etag = [], False, PAYLOAD, None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):  # as the Hugging Face hub: a redirect whose headers carry the file's SHA-256
                server.requests.append("HEAD " + self.path)
                self.send_response(302)
                self.send_header("Location", self.path + "?cdn")
                if server.etag:
                    self.send_header("X-Linked-Etag", f'"{server.etag}"')
                self.end_headers()

            def do_GET(self):
                server.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body[: len(server.body) // 2] if server.truncate else server.body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(hub.MIRROR_ENV, raising=False)
    running = Server()
    yield running
    running.close()


def cache_files(tmp_path):
    directory = tmp_path / "cache"
    # not the .verified records
    return (
        sorted(name for name in os.listdir(directory) if not name.startswith("."))
        if directory.exists()
        else []
    )


def test_downloads_once_verifies_and_a_second_call_makes_no_request(server, tmp_path):
    path = hub.fetch(f"{server.url}/models/vgg16-{SHA256[:8]}.pth", sha256=SHA256[:8], progress=False)
    assert path == str(tmp_path / "cache" / f"vgg16-{SHA256[:8]}.pth") and open(path, "rb").read() == PAYLOAD
    assert hub.fetch(f"{server.url}/models/vgg16-{SHA256[:8]}.pth", sha256=SHA256[:8], progress=False) == path
    assert server.requests == [f"/models/vgg16-{SHA256[:8]}.pth"]  # one request in all
    assert hub.fetch(f"{server.url}/other.h5", md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False).endswith(
        "other.h5"
    )


def test_a_hash_mismatch_is_refused_removed_and_names_both_hashes(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(
        hub.HashMismatch,
        match=rf"sha256 of the download is {SHA256}, the published one is {wrong}; the file was removed",
    ):
        hub.fetch(f"{server.url}/vgg16.pth", sha256=wrong, progress=False)
    assert cache_files(tmp_path) == []


def test_an_interrupted_download_leaves_nothing_a_later_call_would_trust(server, tmp_path):
    server.truncate = True
    with pytest.raises(hub.WeightsUnavailable, match=r"could not download .*vgg16.pth"):
        hub.fetch(f"{server.url}/vgg16.pth", sha256=SHA256, progress=False)
    assert cache_files(tmp_path) == []
    server.truncate = False
    assert open(hub.fetch(f"{server.url}/vgg16.pth", sha256=SHA256, progress=False), "rb").read() == PAYLOAD


def test_offline_is_one_error_naming_the_url_the_cache_path_and_the_ways_out(server, tmp_path):
    server.close()  # nothing listens there any more: as offline as 127.0.0.1 gets
    url = f"{server.url}/vgg16-{SHA256[:8]}.pth"
    with pytest.raises(hub.WeightsUnavailable) as error:
        hub.fetch(url, sha256=SHA256[:8], progress=False, timeout=5)
    message = str(error.value)
    assert (
        "\n" not in message
        and url in message
        and str(tmp_path / "cache" / f"vgg16-{SHA256[:8]}.pth") in message
    )
    assert hub.MIRROR_ENV in message and "vgg_jax.load(path)" in message
    assert "--model FILE or --init-from FILE" in message  # the command line's way too
    # A file placed there by hand is used without a request (nothing is listening).
    os.makedirs(tmp_path / "cache", exist_ok=True)
    (tmp_path / "cache" / f"vgg16-{SHA256[:8]}.pth").write_bytes(PAYLOAD)
    assert hub.fetch(url, sha256=SHA256[:8], progress=False).endswith(".pth")


def test_a_mirror_replaces_the_base_url_and_the_hash_still_applies(server, tmp_path, monkeypatch):
    monkeypatch.setenv(hub.MIRROR_ENV, f"{server.url}/internal/")
    hub.fetch("https://example.invalid/models/vgg19-abc.pth", sha256=SHA256, progress=False)
    assert server.requests == ["/internal/vgg19-abc.pth"]
    server.body = PAYLOAD[:-1] + b"x"  # a bad copy on the mirror
    with pytest.raises(hub.HashMismatch):
        hub.fetch("https://example.invalid/models/vgg11-abc.pth", sha256=SHA256, progress=False)
    assert cache_files(tmp_path) == ["vgg19-abc.pth"]


def test_nothing_is_used_unverified():
    with pytest.raises(ValueError, match="needs the file's sha256 or md5"):
        hub.fetch("http://127.0.0.1:9/x.pth")
    with pytest.raises(ValueError, match="too short"):
        hub.fetch("http://127.0.0.1:9/x.pth", sha256="abc")


# ----------------------------------------------------------------------------- pretrained(name, source)


def test_names_letters_and_sources_resolve_to_the_published_files():
    import vgg_jax
    from vgg_jax.weights.zoo import WEIGHTS, weights_info

    assert weights_info("vgg16").url == "https://download.pytorch.org/models/vgg16-397923af.pth"
    assert weights_info("D") == weights_info("VGG16") == weights_info("vgg16")
    assert weights_info("vgg19-bn").name == "vgg19_bn" and weights_info("E_bn").batch_norm
    keras = weights_info("vgg16_notop", "keras")
    assert (
        keras.md5 == "6d6bbae143d832006294945121d1f1fc"
        and not keras.include_top
        and keras.preprocess == "caffe"
    )
    # torchvision's file names carry the SHA-256 prefix checked on download
    for (
        name,
        source,
    ), entry in WEIGHTS.items():
        assert entry.sha256 is None or entry.url.endswith(f"-{entry.sha256}.pth")
        assert (
            (entry.sha256 or entry.md5 or entry.hash_from_server)
            and entry.licence
            and entry.preprocess in ("torch", "caffe")
        )
    with pytest.raises(ValueError, match="takes num_classes from the weights"):
        vgg_jax.pretrained("vgg16", num_classes=10)
    for bad, source, message in (
        ("vgg17", "torchvision", "no torchvision weights named 'vgg17'; torchvision publishes vgg11"),
        ("A-LRN", "torchvision", "no torchvision weights named"),
        ("vgg11", "keras", "keras publishes vgg16"),
        ("vgg16", "hf", "unknown source .hf."),
    ):
        with pytest.raises(ValueError, match=message):
            weights_info(bad, source)


def test_pretrained_downloads_converts_once_then_reads_one_local_file(server, tmp_path, monkeypatch):
    """The whole path on a tiny model served from 127.0.0.1: fetch, verify, convert, cache; then no request
    at all."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import vgg_jax
    from vgg_jax.weights import formats as weights
    from vgg_jax.weights import zoo

    tiny = dict(width_scale=1 / 16, fc_width=32)
    variables = vgg_jax.VGG("A", num_classes=10, **tiny).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    weights.save(variables, str(tmp_path / "tiny.safetensors"))
    server.body = (tmp_path / "tiny.safetensors").read_bytes()
    digest = hashlib.sha256(server.body).hexdigest()
    entry = zoo.Weights(
        "tiny",
        "torchvision",
        "A",
        False,
        f"{server.url}/models/tiny-{digest[:8]}.safetensors",
        digest[:8],
        None,
        None,
        None,
        "torch",
        "test",
    )
    monkeypatch.setitem(zoo.WEIGHTS, ("tiny", "torchvision"), entry)
    model, loaded = vgg_jax.pretrained("tiny", **tiny)
    assert model.config == "A" and model.num_classes == 10 and model.width_scale == 1 / 16
    assert jax.tree.all(
        jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), loaded, jax.device_get(variables))
    )
    assert model.apply(loaded, jnp.zeros((1, 32, 32, 3))).shape == (1, 10)
    copy = tmp_path / "cache" / f"tiny-{digest[:8]}.safetensors.vgg_jax.msgpack"
    whole = copy.read_bytes()
    copy.write_bytes(whole[: len(whole) // 2])  # a damaged copy beside its verified source: made again
    remade = vgg_jax.pretrained("tiny", **tiny)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), remade.variables, loaded))
    assert copy.read_bytes() == whole
    server.close()  # offline from now on: the converted file in the cache is all a second call needs
    os.unlink(tmp_path / "cache" / f"tiny-{digest[:8]}.safetensors")
    # the convention travels with the weights: no second call to learn it
    again = vgg_jax.pretrained("tiny", **tiny)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), again.variables, loaded))
    assert (again.preprocess, again.image_size, again.classes, again.model) == ("torch", 224, None, model)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert (
        np.array_equal(again.prepare(images), vgg_jax.preprocess(images, "torch"))
        and list(again) == [again.model, again.variables]  # `model, variables = ...` unpacks it
    )
    with pytest.raises(TypeError):
        again[1]  # noqa: B018 - not a sequence (the house issue): .variables says what it is
    assert server.requests == [f"/models/tiny-{digest[:8]}.safetensors"]


def _serve_entry(server, monkeypatch, path, name, source, config, include_top, preprocess):
    """Serves a real-format file from 127.0.0.1 under a registry entry with its published kind of hash."""
    from vgg_jax.weights import zoo

    server.body = open(path, "rb").read()
    sha256, md5 = hashlib.sha256(server.body).hexdigest(), hashlib.md5(server.body).hexdigest()
    file = os.path.basename(path)
    if source == "torchvision":
        stem, extension = os.path.splitext(file)
        file = f"{stem}-{sha256[:8]}{extension}"
    entry = zoo.Weights(
        name,
        source,
        config,
        False,
        f"{server.url}/models/{file}",
        sha256[:8] if source == "torchvision" else None,
        md5 if source == "keras" else None,
        None,
        None,
        preprocess,
        "test",
        include_top,
    )
    monkeypatch.setitem(zoo.WEIGHTS, (name, source), entry)


def test_keras_weights_need_no_torch_and_match_keras(server, tmp_path, monkeypatch):
    """A real Keras .h5 (VGG-16 without its top) served and converted with torch hidden; features equal
    Keras's."""
    import sys

    import jax.numpy as jnp
    import numpy as np

    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    pytest.importorskip("h5py")
    if keras.backend.backend() != "jax":
        pytest.skip(f"Keras runs on {keras.backend.backend()}, not JAX")
    import vgg_jax
    from vgg_jax import VGG

    keras.utils.set_random_seed(1)
    reference = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    reference.save_weights(str(tmp_path / "vgg16_notop.weights.h5"))
    _serve_entry(
        server,
        monkeypatch,
        str(tmp_path / "vgg16_notop.weights.h5"),
        "kerasnotop",
        "keras",
        "D",
        False,
        "caffe",
    )
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails: this path must not need it
    model, variables = vgg_jax.pretrained("kerasnotop", source="keras")
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    pixels = vgg_jax.preprocess(images, "caffe", scale=255)
    ours = model.apply(variables, pixels, layers=("pool5",), method=VGG.features)["pool5"]
    np.testing.assert_allclose(
        np.asarray(ours), np.asarray(reference.predict(np.asarray(pixels), verbose=0)), rtol=1e-4, atol=1e-4
    )
    assert len(server.requests) == 1 and jnp.all(jnp.isfinite(ours))


def test_torchvision_pth_served_and_converted(server, tmp_path, monkeypatch):
    """A real torch .pth (torchvision's layout, file name with the SHA-256 prefix) through pretrained,
    exactly."""
    torch = pytest.importorskip("torch", reason="writing a .pth needs torch")
    import jax
    import jax.numpy as jnp
    import numpy as np

    import vgg_jax

    # torchvision's layout fixes the conv widths; small FC layers keep the file at 40 MB
    tiny = dict(fc_width=32)
    variables = vgg_jax.VGG("A", num_classes=10, **tiny).init(jax.random.key(3), jnp.zeros((1, 224, 224, 3)))
    state = {
        key: torch.from_numpy(np.array(value))
        for key, value in vgg_jax.to_torchvision(variables, "A").items()
    }
    torch.save(state, str(tmp_path / "tiny.pth"))
    _serve_entry(
        server, monkeypatch, str(tmp_path / "tiny.pth"), "tinypth", "torchvision", "A", True, "torch"
    )
    model, loaded = vgg_jax.pretrained("tinypth", **tiny)
    assert jax.tree.all(
        jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), loaded, jax.device_get(variables))
    )
    assert model.num_classes == 10 and server.requests[0].endswith(".pth")


def test_timm_safetensors_verified_by_the_hubs_published_sha256(server, tmp_path, monkeypatch):
    """timm's layout (fc6 as a 7x7 conv) served as the Hugging Face hub serves it.

    The SHA-256 from X-Linked-Etag is checked before use; a wrong or missing one is refused and leaves
    nothing in the cache. No torch involved.
    """
    import sys

    import jax
    import jax.numpy as jnp
    import numpy as np
    from safetensors.numpy import save_file

    import vgg_jax
    from vgg_jax.weights import zoo

    monkeypatch.setitem(sys.modules, "torch", None)
    variables = vgg_jax.VGG("A", num_classes=10, fc_width=32).init(
        jax.random.key(5), jnp.zeros((1, 224, 224, 3))
    )
    timm = {}
    for key, value in vgg_jax.to_torchvision(variables, "A").items():
        key = (
            key.replace("classifier.0", "pre_logits.fc1")
            .replace("classifier.3", "pre_logits.fc2")
            .replace("classifier.6", "head.fc")
        )
        value = np.asarray(value)
        if key.endswith("fc1.weight"):
            value = value.reshape(-1, 512, 7, 7)
        elif key.endswith("fc2.weight"):
            value = value.reshape(value.shape[0], -1, 1, 1)
        timm[key] = np.ascontiguousarray(value)
    save_file(timm, str(tmp_path / "model.safetensors"))
    server.body = (tmp_path / "model.safetensors").read_bytes()
    entry = zoo.dataclasses.replace(
        zoo.weights_info("vgg11", "timm"),
        url=f"{server.url}/timm/tiny.tv_in1k/resolve/main/model.safetensors",
        cache_name="timm-tiny.tv_in1k.safetensors",
    )
    monkeypatch.setitem(zoo.WEIGHTS, ("tiny", "timm"), entry)
    server.etag = "0" * 64
    with pytest.raises(hub.HashMismatch, match="published one is 0000"):
        vgg_jax.pretrained("tiny", source="timm")
    server.etag = None
    with pytest.raises(hub.WeightsUnavailable, match="publishes no SHA-256"):
        vgg_jax.pretrained("tiny", source="timm")
    assert cache_files(tmp_path) == []
    server.etag = hashlib.sha256(server.body).hexdigest()
    model, loaded = vgg_jax.pretrained("tiny", source="timm")
    assert jax.tree.all(
        jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), loaded, jax.device_get(variables))
    )
    assert model.num_classes == 10 and cache_files(tmp_path) == [
        "timm-tiny.tv_in1k.safetensors",
        "timm-tiny.tv_in1k.safetensors.vgg_jax.msgpack",
    ]
    assert (
        zoo.weights_info("vgg16", "timm").url
        == "https://huggingface.co/timm/vgg16.tv_in1k/resolve/main/model.safetensors"
    )
