"""The README's Python example runs as written (with a model of this repository in place of ``mypkg.nets:build``)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT


#: What the README's Python examples leave to the reader: their own model class.
PRELUDE = """
import torch
from torch import nn


class MyNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)))
"""


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


@pytest.mark.parametrize("index", [k for k, b in enumerate(_python_blocks()) if "converter.convert(" in b],
                         ids=lambda k: "bert" if "BertModel" in _python_blocks()[k] else f"block{k}")
def test_the_api_examples_run_as_written(tmp_path, index: int) -> None:
    """Each ``converter.convert`` example of the README, in a fresh Python process (as a user's script runs) in an
    empty directory: it must exit 0, i.e. convert, pass ``raise_if_failed`` and its own asserts."""
    import os
    import subprocess
    import sys

    script = PRELUDE + _python_blocks()[index]
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out").is_dir() and list((tmp_path / "out").glob("*/model_fp32.tflite"))


def test_the_pytest_gate_example_runs(tmp_path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    gate = next(b for b in blocks if "assert_parity" in b)
    namespace: dict = {}
    exec(gate.replace("mypkg.nets:build", "tests.toy_models:segmentation_head"), namespace)  # noqa: S102
    test = next(v for k, v in namespace.items() if k.startswith("test_"))
    test(tmp_path)  # raises ParityFailed (with the table) if any row fails
    assert (tmp_path / "out" / "model_fp32.tflite").is_file() and (tmp_path / "out" / "parity.json").is_file()


#: The README's placeholders, made real: ``mypkg`` is a package on PYTHONPATH (how a user's own code is found).
MYPKG = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class Classifier(nn.Module):
    def __init__(self, vocab=30522):
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, input_ids, attention_mask):
        w = attention_mask.unsqueeze(-1).float()
        return self.head((self.embed(input_ids) * w).sum(1) / w.sum(1).clamp(min=1.0))


def build():
    torch.manual_seed(0)
    return Net()


def classifier():
    torch.manual_seed(0)
    return Classifier()
'''

#: What each README command needs on disk, made by this script in the command's directory (``torch.export`` in a
#: process of its own: beside TensorFlow it can segfault).
FILES = '''
import sys, torch
sys.path.insert(0, sys.argv[1])
from reference_models.mnist_cnn import MnistCNN
from mypkg.nets import build
torch.manual_seed(0)
net = MnistCNN().eval()
net.load_state_dict(torch.load(sys.argv[2]))
torch.save(net.state_dict(), "model.pt")
torch.save(build().state_dict(), "net.pt")
x = torch.zeros(1, 1, 28, 28)
torch.jit.save(torch.jit.trace(net, x), "model.torchscript.pt")
torch.export.save(torch.export.export(net, (x,)), "model.pt2")
torch.onnx.export(net, (x,), "model.onnx", input_names=["image"], output_names=["logits"], dynamo=False)
'''


def _usage_commands() -> list[str]:
    """The ``convert`` commands of the README's usage block, continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## `convert` usage", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    joined = re.sub(r"\\\n\s*", "", block)
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.startswith("convert ")]


def test_the_usage_block_lists_the_commands_this_test_runs() -> None:
    commands = _usage_commands()
    assert len(commands) >= 9 and any("--check" in c for c in commands) and any("model.pt2" in c for c in commands)


def test_every_usage_command_runs(tmp_path, trained_weights) -> None:
    """Each command runs as written, in one directory (``--check`` after the conversion it checks), with
    ``--precision fp32 --parity-samples 20`` appended to keep the suite fast: exit 0, parity passed."""
    import os
    import shlex
    import subprocess

    from tests.conftest import BIN

    (tmp_path / "lib" / "mypkg").mkdir(parents=True)
    (tmp_path / "lib" / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "lib" / "mypkg" / "nets.py").write_text(MYPKG)
    (tmp_path / "runs" / "main" / "torch").mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'lib'}{os.pathsep}{ROOT}")
    made = subprocess.run([str(BIN / "python"), "-c", FILES, str(tmp_path / "lib"), str(trained_weights)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    (tmp_path / "runs" / "main" / "torch" / "model.pt").write_bytes((tmp_path / "model.pt").read_bytes())
    failures = []
    for command in _usage_commands():
        args = shlex.split(command)[1:]
        done = subprocess.run([str(BIN / "convert"), *args, "--precision", "fp32", "--parity-samples", "20"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or "PASSED" not in done.stdout:
            failures.append(f"{command}\n  exit {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1]}")
    assert not failures, "\n".join(failures)
