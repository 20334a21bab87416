"""Install the pack the way users do, then find its nodes in a real host."""
import os
import shutil
import subprocess
import sys

import pytest

from lean_testlib import REPO, harness
from test_tier2_smoke import EXPECTED_NODES

HOST_SKIP = {"custom_nodes", "models", "output", "input", "temp", "user", ".git", "__pycache__"}


def _cli(name):
    path = shutil.which(name)
    if not path:
        pytest.fail(f"`{name}` is not installed: pip install -r tests/requirements.txt")
    return path


def _validate(cwd):
    env = dict(os.environ, COMFY_CLI_TELEMETRY="false")
    return subprocess.run([_cli("comfy"), "--skip-prompt", "--no-enable-telemetry", "node", "validate"],
                          cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_comfy_node_validate_passes_on_the_repo():
    r = _validate(REPO)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "All validation checks passed" in out and "Security warnings" not in out, out


def test_comfy_node_validate_catches_exec(tmp_path):
    """The validator really looks: the same pyproject with an exec() beside it is flagged."""
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    (tmp_path / "bad.py").write_text("exec('print(1)')\n")
    out = _validate(tmp_path)
    assert "Security warnings" in out.stdout + out.stderr


@pytest.mark.tier2
def test_manager_installs_from_git_and_host_loads_the_nodes(tmp_path):
    host_src, why = harness.find_host()
    scratch = tmp_path / "ComfyUI"
    shutil.copytree(host_src, scratch, ignore=lambda d, names: [n for n in names if n in HOST_SKIP and d == str(host_src)])
    (scratch / "custom_nodes").mkdir()
    bare = tmp_path / "comfyui-lean.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(REPO), str(bare)], check=True)
    env = dict(os.environ, COMFYUI_PATH=str(scratch))
    _cli("cm-cli")
    # the Manager runs inside the host's python (it imports the host's aiohttp), as ComfyUI-Manager does
    r = subprocess.run([harness.host_python(host_src), "-c", "import sys; from cm_cli import main; sys.exit(main())",
                        "install", f"file://localhost{bare}"], capture_output=True, text=True,
                       env=env, timeout=900, cwd=str(tmp_path))
    out = r.stdout + r.stderr
    installed = scratch / "custom_nodes" / "comfyui-lean"
    assert r.returncode == 0 and "[INSTALLED]" in out, out
    assert (installed / "__init__.py").is_file(), out
    for line in (REPO / "requirements.txt").read_text().splitlines():  # installed line by line
        if line.strip() and not line.startswith("#"):
            assert line.strip() in out, f"the Manager did not pip-install {line!r}:\n{out}"
    host = harness.ComfyHost.start(scratch, scratch, link_pack=False, verbose="INFO")
    try:
        names = {k for k in host.object_info() if k.startswith("Lean")}
        assert names >= EXPECTED_NODES and names, (names, host.log_tail(80))
        assert "comfyui-lean" in host.log() and "IMPORT FAILED" not in [l for l in host.log().splitlines() if "comfyui-lean" in l][0]
    finally:
        host.stop()
