"""Every code block and command of the README runs as written.

In a temporary working directory, with local files standing in for the user's (a photo, checkpoint
files, an ImageNet folder) and a server on 127.0.0.1 standing in for the download hosts. Not run
here: `make test` and `make test-all` (they run this suite) and `make bench` and `make bench-export`
(benchmarks of several minutes); `make demo` runs in test_demo.py, which checks what it learns.
`convnext-tf` commands call the console script's function, `cli.main`, in this process.
"""
import os
import re
import shlex
import shutil
import subprocess

import cv2
import pytest
import tf_keras
import torch
from transformers import ConvNextV2ForImageClassification
from reference import hf_classifier, hf_config, hf_to_official, hf_to_timm
from safetensors.torch import save as safetensors_bytes
from test_demo import interpreter_env, make
from test_download import Server, official, torch_bytes
from test_imagenet import make_ilsvrc
from test_no_torch import port_file
from test_segmentation import hf_upernet

from convnext_tf.backbones import catalogue, download
from convnext_tf.tasks import cli, shapes
from convnext_tf.tasks.shapes import photo_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()
NOT_RUN = ("make test", "make test-all", "make bench", "make bench-export")
RUN_IN_TEST_DEMO = "make demo"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README, re.S | re.M)


def commands() -> list[str]:
    """Commands in indented blocks and in inline code: `make ...` and `convnext-tf ...`."""
    found = []
    for block in re.findall(r"(?:^    \S.*\n(?:^     .*\n)*)+", README, re.M):
        text = re.sub(r"\\\n\s*", "", block)  # line continuations
        for line in text.splitlines():
            line = line.strip().split("  #")[0].strip()
            if line.startswith(("make ", "convnext-tf ")):
                found.append(line)
    found += re.findall(r"`((?:make|convnext-tf) [^`]+)`", README)
    return list(dict.fromkeys(found))


def run_here() -> list[str]:
    return [c for c in commands() if c not in NOT_RUN and c != RUN_IN_TEST_DEMO]


def test_the_readme_has_what_this_test_runs():
    assert len(python_blocks()) >= 9
    assert {RUN_IN_TEST_DEMO, "make demo WEIGHTS=imagenet_1k",
            "convnext-tf convert imagenet_1k --model convnext_tiny"} <= set(commands())
    assert set(NOT_RUN) | {RUN_IN_TEST_DEMO} <= set(re.findall(r"^    (make [\w-]+)", README, re.M))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The user's files and the download hosts, as the README assumes them."""
    root = tmp_path_factory.mktemp("readme")
    photo = cv2.imread(photo_path())
    cv2.imwrite(str(root / "street.jpg"), cv2.resize(photo, (500, 375)))
    tiny = hf_classifier("convnext_tiny").state_dict()
    torch.save(hf_to_official(tiny), root / "convnext_tiny_1k_224_ema.pth")
    (root / "model.safetensors").write_bytes(safetensors_bytes(hf_to_timm(tiny, conv_mlp=False)))
    tiny_22k = hf_to_official(hf_classifier("convnext_tiny", num_labels=21841).state_dict())
    torch.save(tiny_22k, root / "convnext_tiny_22k_224.pth")
    for name in ("convnext_tiny", "convnextv2_atto"):  # the original TensorFlow port's files
        port_file(name, root / f"{name}_1k_224_ema.h5")
    torch.manual_seed(0)  # a checkpoint at PyTorch's initial values: trains as a real one does
    v2_atto = hf_to_official(ConvNextV2ForImageClassification(hf_config("convnextv2_atto")).state_dict())
    shapes.write_folder(root / "my_data", 12, seed=0, size_range=(64, 100))  # the user's images and labels
    images, annotations, _ = make_ilsvrc(root / "ilsvrc", n=3)
    shutil.move(images, root / "ILSVRC2012_img_val")
    shutil.move(annotations, root / "ILSVRC2012_bbox_val")
    files = {
        official(catalogue.find("convnext_tiny", "imagenet_1k", 224)).path: torch_bytes(hf_to_official(tiny)),
        official(catalogue.find("convnext_tiny", "imagenet_22k", 384)).path: torch_bytes(hf_to_official(tiny)),
        official(catalogue.find("convnext_tiny", "imagenet_22k_pretrain", 224)).path: torch_bytes(tiny_22k),
        official(catalogue.find("convnextv2_atto", "imagenet_1k", 224)).path: torch_bytes(v2_atto),
        official(catalogue.find("convnextv2_nano", "imagenet_22k", 384)).path:
            torch_bytes(hf_to_official(hf_classifier("convnextv2_nano").state_dict())),
        catalogue.find("upernet_convnext_tiny", "ade20k").sources[0].path:
            torch_bytes(hf_upernet("convnext_tiny", num_labels=150, hidden_size=512, aux_channels=256).state_dict()),
    }
    for block in re.findall(r"^```yaml\n(.*?)^```", README, re.S | re.M):  # files the README shows
        (root / re.match(r"# (\S+\.yaml)", block).group(1)).write_text(block)
    server = Server(files)
    env = {catalogue.BASE_URL_ENV: server.url, download.HOME_ENV: str(root / "cache")}
    yield root, env
    server.close()


@pytest.fixture
def in_workdir(workdir, monkeypatch):
    root, env = workdir
    monkeypatch.chdir(root)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return root


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_python_block(index, in_workdir):
    code = python_blocks()[index]
    tf_keras.backend.clear_session()
    exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})


def test_convnext_tf_is_the_installed_command():
    """`convnext-tf` on PATH is `cli.main` (the commands below call it in this process)."""
    run = subprocess.run(["convnext-tf", "--help"], capture_output=True, text=True, env=interpreter_env(), timeout=300)
    assert run.returncode == 0 and run.stdout.startswith("usage: convnext-tf "), run.stdout + run.stderr


@pytest.mark.parametrize("command", run_here())
def test_command(command, in_workdir):
    argv = shlex.split(command)
    if argv[0] == "make":
        make(command, in_workdir / "out", in_workdir)
        return
    try:  # in this process: a TensorFlow start-up less per command
        cli.main(argv[1:])
    except SystemExit as exit_info:
        assert exit_info.code in (0, None), f"{command} exited with {exit_info.code}"
