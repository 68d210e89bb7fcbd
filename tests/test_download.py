"""Pretrained weights by name: download from a local HTTP server, verify, convert, cache, fail cleanly."""
import dataclasses
import http.server
import io
import os
import socket
import threading
import time

import numpy as np
import pytest
import tf_keras
import torch
from reference import hf_classifier, hf_to_official, hf_to_timm
from safetensors.torch import save as safetensors_bytes

from convnext_tf.backbones import ConvNeXtBackbone, catalogue, convnext_atto, convnextv2_atto, download

X = np.random.default_rng(0).standard_normal((1, 64, 64, 3)).astype(np.float32)


class Server:
    """Serves `files` on 127.0.0.1: {path: bytes} with a Content-Length, or {path: (bytes, headers)}.

    Paths under 'cut/' close the connection halfway; under 'slow/' half is sent, then nothing.
    """

    def __init__(self, files):
        self.files, self.requests = files, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                path = self.path.lstrip("/")
                mode = path.split("/")[0] if path.startswith(("cut/", "slow/")) else ""
                entry = outer.files.get(path.removeprefix(f"{mode}/") if mode else path)
                if entry is None:
                    self.send_error(404)
                    return
                data, headers = entry if isinstance(entry, tuple) else (entry, {"Content-Length": str(len(entry))})
                self.send_response(200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if mode else data)
                if mode == "slow":
                    self.wfile.flush()
                    time.sleep(30)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def official(ckpt):
    """The checkpoint's source on Meta's host (.pth / .pt), after timm's .safetensors."""
    return next(s for s in ckpt.sources if s.host == catalogue.FB)


def torch_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def refs():
    return {"convnextv2_atto": hf_classifier("convnextv2_atto", seed=5), "convnext_atto": hf_classifier("convnext_atto", seed=6)}


@pytest.fixture
def server(refs, tmp_path, monkeypatch):
    v2 = catalogue.find("convnextv2_atto", "fcmae_imagenet_1k", 224)
    v1 = catalogue.find("convnext_atto", "imagenet_1k", 224)
    files = {
        official(v2).path: torch_bytes(hf_to_official(refs["convnextv2_atto"].state_dict())),  # official .pt
        v1.sources[0].path: safetensors_bytes(hf_to_timm(refs["convnext_atto"].state_dict(), conv_mlp=True)),  # timm
    }
    srv = Server(files)
    monkeypatch.setenv(catalogue.BASE_URL_ENV, srv.url)
    monkeypatch.setenv(download.HOME_ENV, str(tmp_path / "cache"))
    yield srv
    srv.close()


def logits(ref):
    with torch.no_grad():
        return ref(torch.from_numpy(X.transpose(0, 3, 1, 2))).logits.numpy()


def cached_files(tmp_path):
    root = tmp_path / "cache"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_download_convert_cache_then_offline(server, refs, tmp_path):
    model = convnextv2_atto(input_shape=(64, 64, 3), weights="fcmae_imagenet_1k")
    expected = logits(refs["convnextv2_atto"])
    assert np.max(np.abs(model(X).numpy() - expected)) <= 1e-4 * np.max(np.abs(expected))
    assert cached_files(tmp_path) == [
        "converted/convnextv2_atto_fcmae_imagenet_1k_224.weights.h5", "downloads/convnextv2_atto_fcmae_imagenet_1k_224.pt"
    ]
    v2 = catalogue.find("convnextv2_atto", "fcmae_imagenet_1k", 224)  # timm's file first (404 here), then Meta's
    assert server.requests == ["/" + v2.sources[0].path, "/" + official(v2).path]
    server.close()  # offline from here on: the conversion is cached
    os.remove(tmp_path / "cache/downloads/convnextv2_atto_fcmae_imagenet_1k_224.pt")
    again = convnextv2_atto(input_shape=(64, 64, 3), weights="fcmae_ft_in1k")  # timm's tag for the same file
    np.testing.assert_array_equal(again(X).numpy(), model(X).numpy())
    backbone = ConvNeXtBackbone("atto", "v2", weights="fcmae_imagenet_1k", output_norm=False)  # head ignored
    stage3 = tf_keras.Model(model.inputs, model.get_layer("stages.3.blocks.1").output)
    np.testing.assert_allclose(backbone(X)["5"].numpy(), stage3(X).numpy(), rtol=1e-5, atol=1e-5)


def test_timm_safetensors_by_name(server, refs):
    model = convnext_atto(input_shape=(64, 64, 3), weights="imagenet_1k")
    expected = logits(refs["convnext_atto"])
    assert np.max(np.abs(model(X).numpy() - expected)) <= 1e-4 * np.max(np.abs(expected))


def test_name_the_variant_lacks():
    with pytest.raises(ValueError, match=r"No checkpoint 'imagenet_22k' for convnext_atto.*'imagenet_1k' \(224\)"):
        convnext_atto(weights="imagenet_22k")
    assert official(catalogue.find("convnextv2_huge", "imagenet_22k", 512)).path.endswith("huge_22k_512_ema.pt")
    assert official(catalogue.find("convnext_base", "imagenet_1k", 384)).path.endswith("convnext_base_1k_384.pth")
    assert catalogue.find("convnext_base", "imagenet_1k", None).resolution == 224


def test_hash_mismatch_is_rejected_and_deleted(server, tmp_path, monkeypatch):
    bad = [dataclasses.replace(c, sources=tuple(dataclasses.replace(s, sha256="0" * 64) for s in c.sources))
           if c.model == "convnextv2_atto" else c for c in catalogue.CHECKPOINTS]
    monkeypatch.setattr(catalogue, "CHECKPOINTS", bad)
    with pytest.raises(download.DownloadError, match="sha256 differs"):
        convnextv2_atto(weights="fcmae_imagenet_1k")
    assert cached_files(tmp_path) == []


def test_good_hash_is_accepted(server, tmp_path, monkeypatch):
    import hashlib

    ckpt = catalogue.find("convnextv2_atto", "fcmae_imagenet_1k", 224)
    digest = hashlib.sha256(server.files[official(ckpt).path]).hexdigest()
    sources = tuple(dataclasses.replace(s, sha256=digest) if s == official(ckpt) else s for s in ckpt.sources)
    monkeypatch.setattr(catalogue, "CHECKPOINTS", [dataclasses.replace(c, sources=sources) if c == ckpt else c
                                                   for c in catalogue.CHECKPOINTS])
    convnextv2_atto(weights="fcmae_imagenet_1k")
    assert len(cached_files(tmp_path)) == 2


def test_interrupted_download_leaves_nothing(server, tmp_path, monkeypatch):
    monkeypatch.setenv(catalogue.BASE_URL_ENV, server.url + "/cut")
    with pytest.raises(download.DownloadError, match="closed after"):
        convnextv2_atto(weights="fcmae_imagenet_1k")
    assert cached_files(tmp_path) == []


def test_404_and_refused_connection_say_url_cache_and_local_file(server, tmp_path, monkeypatch):
    monkeypatch.setenv(catalogue.BASE_URL_ENV, server.url + "/missing")
    with pytest.raises(download.DownloadError) as e:
        convnextv2_atto(weights="fcmae_imagenet_1k")
    msg = str(e.value)
    assert f"{server.url}/missing/convnext/convnextv2/im1k/convnextv2_atto_1k_224_ema.pt" in msg
    assert str(tmp_path / "cache" / "downloads") in msg and "weights='/path/to/convnextv2_atto_1k_224_ema.pt'" in msg
    assert "404" in msg
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(catalogue.BASE_URL_ENV, f"http://127.0.0.1:{port}")
    with pytest.raises(download.DownloadError, match="refused"):
        convnextv2_atto(weights="fcmae_imagenet_1k")
    assert cached_files(tmp_path) == []


def test_upernet_ade20k_by_name(tmp_path, monkeypatch):
    """The openmmlab UperNet checkpoints are in Hugging Face's format; 'ade20k' loads them."""
    from test_segmentation import hf_upernet

    from convnext_tf.tasks.segmentation import build_segmentation_model

    ckpt = catalogue.find("upernet_convnext_tiny", "ade20k")
    ref = hf_upernet("convnext_tiny", num_labels=150, hidden_size=512, aux_channels=256)
    srv = Server({ckpt.sources[0].path: torch_bytes(ref.state_dict())})
    monkeypatch.setenv(catalogue.BASE_URL_ENV, srv.url)
    monkeypatch.setenv(download.HOME_ENV, str(tmp_path / "cache"))
    try:
        model = build_segmentation_model("convnext_tiny", 150, weights="ade20k")
    finally:
        srv.close()
    x = np.random.default_rng(0).standard_normal((1, 96, 128, 3)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).logits.numpy().transpose(0, 2, 3, 1)
    assert np.max(np.abs(model(x).numpy() - expected)) <= 1e-4 * np.max(np.abs(expected))


def test_imagenet_1k_of_a_v2_variant_is_its_fcmae_fine_tuned_classifier():
    for size in ("atto", "tiny", "huge"):
        ckpt = catalogue.find(f"convnextv2_{size}", "imagenet_1k")
        assert ckpt == catalogue.find(f"convnextv2_{size}", "fcmae_imagenet_1k") and ckpt.classes == 1000
    assert catalogue.find("convnext_tiny", "imagenet_1k").tag == "imagenet_1k"
    with pytest.raises(ValueError, match="No checkpoint 'imagenet_1k' for upernet_convnext_tiny"):
        catalogue.find("upernet_convnext_tiny", "imagenet_1k")
