"""Tier 1: the host matrix (scripts/hosts.py) and the import stand-in for torchvision/torchaudio."""
import hashlib
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile

import pytest

from lean_testlib import REPO, harness



def load_hosts():
    spec = importlib.util.spec_from_file_location("lean_hosts_under_test", REPO / "scripts" / "hosts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


hosts = load_hosts()
HOSTS_README = hosts.archives_dir() / "README.md"  # $LEAN_HOSTS_DIR, else ../shared/hosts, as provisioning reads them


def test_matrix_has_both_hosts_and_a_default():
    assert set(hosts.HOSTS) == {"0.3.64", "0.33.0"}
    assert hosts.DEFAULT == "0.33.0"
    for v, s in hosts.HOSTS.items():
        assert s["archive"] == f"comfyui-{v}.tar.gz"
        assert re.fullmatch(r"[0-9a-f]{64}", s["sha256"]) and re.fullmatch(r"[0-9a-f]{40}", s["commit"])


@pytest.mark.skipif(not HOSTS_README.is_file(), reason=f"no {HOSTS_README} (the archives' README; set LEAN_HOSTS_DIR)")
def test_matrix_matches_the_archives_readme():
    """sha256 and commit of each host as the README of the archives gives them (read independently)."""
    rows = {}
    for line in HOSTS_README.read_text().splitlines():
        cells = [c.strip(" `") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[0].endswith(".tar.gz"):
            rows[cells[0]] = cells
    for v, s in hosts.HOSTS.items():
        row = rows[s["archive"]]
        assert row[1] == v and row[3] == s["commit"] and row[5] == s["sha256"], row


def test_requirements_drop_torch_family_and_keep_the_rest(tmp_path):
    (tmp_path / "requirements.txt").write_text(
        "comfyui-frontend-package==1.49.6\ntorch\ntorchsde\ntorchvision\ntorchaudio>=2\n# comment\n\n"
        "numpy>=1.25.0\nspandrel\ntransformers>=4.50.3\n")
    assert hosts.host_requirements(tmp_path) == ["comfyui-frontend-package==1.49.6", "torchsde", "numpy>=1.25.0",
                                                 "transformers>=4.50.3"]


def _fake_archive(path, main_py=True):
    src = path.parent / "src" / "ComfyUI"
    (src / "comfy").mkdir(parents=True)
    if main_py:
        (src / "main.py").write_text("print('fake')\n")
    (src / "requirements.txt").write_text("torch\n")
    with tarfile.open(path, "w:gz") as tf:
        tf.add(src, arcname="ComfyUI")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_archive_says_what_is_missing_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAN_HOSTS_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("LEAN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(hosts.HostError) as e:
        hosts.provision("0.33.0", quiet=True)
    msg = str(e.value)
    assert "comfyui-0.33.0.tar.gz" in msg and str(tmp_path / "nowhere") in msg
    assert hosts.HOSTS["0.33.0"]["commit"] in msg and "LEAN_HOSTS_DIR" in msg


def test_the_cli_fails_with_that_message_too(tmp_path):
    env = dict(os.environ, LEAN_HOSTS_DIR=str(tmp_path / "nowhere"), LEAN_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "hosts.py"), "provision", "all"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no archive" in r.stderr and "comfyui-0.3.64.tar.gz" in r.stderr, r.stderr


def test_wrong_sha256_is_refused_before_anything_is_unpacked(tmp_path, monkeypatch):
    d = tmp_path / "archives"
    d.mkdir()
    _fake_archive(d / "comfyui-0.3.64.tar.gz")
    monkeypatch.setenv("LEAN_HOSTS_DIR", str(d))
    monkeypatch.setenv("LEAN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(hosts.HostError, match="sha256"):
        hosts.provision("0.3.64", quiet=True)
    assert not (tmp_path / "cache" / "hosts" / "0.3.64" / "ComfyUI").exists()


def test_unknown_version_is_refused():
    with pytest.raises(hosts.HostError, match="unknown host"):
        hosts.provision("9.9.9")


def test_host_the_pack_sits_in_comes_after_comfyui_path_and_before_home(tmp_path):
    """The same order as `lean.py serve`: COMFYUI_PATH, ComfyUI/custom_nodes/<pack>, ~/ComfyUI."""
    comfy = tmp_path / "ComfyUI"
    (comfy / "comfy").mkdir(parents=True)
    (comfy / "main.py").write_text("")
    pack = comfy / "custom_nodes" / "comfyui-lean"
    (pack / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "hosts.py", pack / "scripts" / "hosts.py")
    home = tmp_path / "home"
    (home / "ComfyUI" / "comfy").mkdir(parents=True)
    (home / "ComfyUI" / "main.py").write_text("")
    other = tmp_path / "Other"
    (other / "comfy").mkdir(parents=True)
    (other / "main.py").write_text("")
    code = ("import importlib.util as u, sys; s=u.spec_from_file_location('h', sys.argv[1]); m=u.module_from_spec(s); "
            "s.loader.exec_module(m); print(m.find_user_host()[0])")

    def found(**env):
        e = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
        e.update(HOME=str(home), **env)
        return subprocess.run([sys.executable, "-c", code, str(pack / "scripts" / "hosts.py")], env=e,
                              capture_output=True, text=True, check=True).stdout.strip()

    assert found(COMFYUI_PATH=str(other)) == str(other.resolve())
    assert found() == str(comfy.resolve())
    shutil.rmtree(comfy / "comfy")
    assert found() == str((home / "ComfyUI").resolve())


STANDIN_USE = """
import torchvision, torchvision.ops, torchaudio
from torchvision.ops import deform_conv2d
from torchvision.transforms.functional import InterpolationMode
from torchvision.models.optical_flow import raft_large
import torchvision.transforms.functional as TF
from torchaudio.transforms import MelScale
class Net(torchvision.nn.Module):
    pass
mode = InterpolationMode.BICUBIC
try:
    raft_large()
except ModuleNotFoundError as e:
    assert "stand-in" in str(e), e
else:
    raise SystemExit("calling a stand-in name did not fail")
import importlib.metadata
try:
    importlib.metadata.version("torchvision")
except importlib.metadata.PackageNotFoundError:
    print("no metadata")   # so libraries that check the installed version (transformers) see no torchvision
print("ok", torchvision.__version__)
"""


def test_standin_covers_any_submodule_and_fails_loudly_when_used(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(harness.SHIMS)
    r = subprocess.run([sys.executable, "-c", STANDIN_USE], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ok 0.0.0+lean-test-standin" in r.stdout and "no metadata" in r.stdout


def test_without_the_standin_those_imports_fail_here(tmp_path):
    """The stand-in is what makes the check above pass: this machine's torch has no usable torchvision, and a
    provisioned host's environment (this python, when the tests run with it) has the stand-in on its own path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import torchvision.ops, torchvision; print(getattr(torchvision, '__lean_standin__', False))"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    if r.returncode == 0 and r.stdout.strip() == "False":
        pytest.skip("a working torchvision is installed in this python")
    assert r.returncode != 0 or r.stdout.strip() == "True", (r.stdout, r.stderr)
