"""Tier 1: .ci/run runs exactly the README's test command, once per host of the matrix, and CI cannot pass by
skipping."""
import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def readme_test_command():
    text = (REPO / "README.md").read_text()
    section = text.split("## Test", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()


def test_ci_runs_the_readme_test_command():
    """Per host, the README's command with a selection appended (tier 2), inside the offline namespace."""
    cmd = readme_test_command()
    assert "pytest" in cmd
    ci = (REPO / ".ci" / "run").read_text()
    ci_lines = [l.strip() for l in ci.splitlines()]
    assert f'offline {cmd} "$@"' in ci_lines, f".ci/run does not run the README's test command {cmd!r}"
    assert re.search(r'^\s+run_tests -m "\$sel"', ci, re.M)
    assert 'sel="tier2"' in ci and 'sel="tier2 and not sdxl_ckpt and not one_host"' in ci  # on the default host only
    # tier 1 once, in two parts that together are all of it: tests/ less the LLM files, then the LLM files
    assert re.search(r'offline "\$PY" -m pytest -q "\$@" -m "not tier2"', ci)
    glob = re.search(r"^LLM_T1='([^']+)'$", ci, re.M).group(1)
    assert re.search(r'^tier1 tests --ignore-glob="\$LLM_T1"', ci, re.M)
    assert re.search(r'^tier1 \$LLM_T1\b', ci, re.M)
    assert sorted(REPO.glob(glob)), f"{glob} names no file"
    # and tier 1 under the dependency floors, in the same two parts
    assert re.search(r'^\.ci/floors "\$PY" tests --ignore-glob="\$LLM_T1"', ci, re.M)
    assert re.search(r'^\.ci/floors "\$PY" \$LLM_T1\b', ci, re.M)


def test_ci_fails_without_a_network_namespace(tmp_path):
    """.ci/run under CI=true stops at once when `unshare -n` fails (a PATH shim makes it fail here)."""
    shim = tmp_path / "unshare"
    shim.write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n")
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}", CI="true")
    r = subprocess.run(["bash", str(REPO / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "FAILED: no network namespace can be made here" in r.stdout and "Operation not permitted" in r.stdout
    assert "torch" not in r.stdout.split("FAILED", 1)[1]  # nothing installed after the failure


def test_ci_treats_no_tests_as_failure():
    assert re.search(r'"\$r" -eq 5', (REPO / ".ci" / "run").read_text())


def test_ci_provisions_every_host_and_runs_the_tests_with_each():
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/hosts.py provision all" in ci
    assert re.search(r'for v in \$VERSIONS; do', ci) and "m.HOSTS" in ci
    assert 'COMFYUI_PATH="$host"' in ci and 'PATH="$(dirname "$hpy"):$PATH"' in ci
    assert 'export CI="${CI:-true}"' in ci


def _pytest(tmp_path, *args, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("CI", "COMFYUI_PATH")}
    e.update(HOME=str(tmp_path), LEAN_CACHE=str(tmp_path / "cache"), COMFYUI_PATH=str(tmp_path / "no_host"), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=REPO, env=e,
                          capture_output=True, text=True, timeout=300)


def test_a_missing_host_skips_for_developers_and_fails_under_ci(tmp_path):
    """The real conftest, on a real tier-2 file, with no host to be found."""
    dev = _pytest(tmp_path, "tests/test_tier2_smoke.py")
    assert dev.returncode == 0 and " skipped" in dev.stdout and "failed" not in dev.stdout, dev.stdout[-2000:]
    assert "TIER 2 SKIPPED" in dev.stdout
    ci = _pytest(tmp_path, "tests/test_tier2_smoke.py", CI="true")
    assert ci.returncode == 1 and re.search(r"\d+ (failed|errors?)", ci.stdout) and "CI=true, so this skip is a failure" in ci.stdout, \
        ci.stdout[-2000:]


def test_a_missing_module_level_prerequisite_fails_under_ci_too(tmp_path):
    """importorskip at module level (tests/test_tier2_llm.py) is a collection skip: it must fail under CI as well."""
    r = _pytest(tmp_path, "tests/test_tier2_llm.py", CI="true",
                PYTHONPATH=str(REPO / "tests" / "lean_testlib" / "no_llama_cpp"))
    assert "llama-cpp-python not installed" in r.stdout, r.stdout[-3000:]
    assert r.returncode != 0 and "CI=true, so this skip is a failure" in r.stdout, r.stdout[-3000:]


# ---------------------------------------------------------------- no silent skip under CI=true
def _pytest_with_conftest(tmp_path, body, *args, **env):
    """The real tests/conftest.py (loaded as a plugin) on a test file of our own in tmp_path."""
    (tmp_path / "test_probe.py").write_text(body)
    e = {k: v for k, v in os.environ.items() if k not in ("CI", "COMFYUI_PATH", "LEAN_IN_NETNS")}
    e.update(HOME=str(tmp_path), LEAN_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO / "tests"), **env)
    e.setdefault("COMFYUI_PATH", str(tmp_path / "no_host"))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                           "-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path), "-rs",
                           str(tmp_path / "test_probe.py"), *args],
                          cwd=tmp_path, env=e, capture_output=True, text=True, timeout=300)


UNLISTED = "import pytest\n\ndef test_skips():\n    pytest.skip('a reason nobody listed')\n"
ALLOWED = "import pytest\n\ndef test_skips():\n    pytest.skip('already inside the offline namespace')\n"


def test_an_unlisted_skip_fails_under_ci_and_skips_otherwise(tmp_path):
    dev = _pytest_with_conftest(tmp_path, UNLISTED, "-m", "not tier2")
    assert dev.returncode == 0 and "1 skipped" in dev.stdout, dev.stdout[-2000:]
    ci = _pytest_with_conftest(tmp_path, UNLISTED, "-m", "not tier2", CI="true")
    assert ci.returncode == 1 and "1 failed" in ci.stdout, ci.stdout[-2000:]
    assert "CI=true, so this skip is a failure: a reason nobody listed" in ci.stdout
    assert "not on the allow-list" in ci.stdout


def test_an_allowed_skip_passes_under_ci_only_where_its_condition_holds_and_the_list_is_printed(tmp_path):
    ok = _pytest_with_conftest(tmp_path, ALLOWED, "-m", "not tier2", CI="true", LEAN_IN_NETNS="1")
    assert ok.returncode == 0 and "1 skipped" in ok.stdout, ok.stdout[-2000:]
    assert "CI=true skip allow-list" in ok.stdout
    assert re.search(r"\[1 skipped here\] /already inside the offline namespace/ only when LEAN_IN_NETNS=1", ok.stdout)
    assert "lazy layers: not in ComfyUI 0.3.64" in ok.stdout  # every entry is printed, used or not
    bad = _pytest_with_conftest(tmp_path, ALLOWED, "-m", "not tier2", CI="true")  # condition does not hold
    assert bad.returncode == 1 and "1 failed" in bad.stdout, bad.stdout[-2000:]


def _fake_host(tmp_path):
    host = tmp_path / "FakeComfyUI"
    (host / "comfy").mkdir(parents=True)
    (host / "main.py").write_text("")
    (host / "comfyui_version.py").write_text('__version__ = "0.0.1"\n')
    return host


PASSING = "def test_passes():\n    assert True\n"


def test_a_ci_run_that_runs_no_tier2_test_fails(tmp_path):
    """A host is found, tier 2 is not deselected, nothing of tier 2 runs: "TIER 2 NOT RUN" fails the run under CI."""
    host = str(_fake_host(tmp_path))
    dev = _pytest_with_conftest(tmp_path, PASSING, COMFYUI_PATH=host)
    assert dev.returncode == 0 and "TIER 2 NOT RUN" in dev.stdout, dev.stdout[-2000:]
    ci = _pytest_with_conftest(tmp_path, PASSING, COMFYUI_PATH=host, CI="true")
    assert ci.returncode == 1 and "1 passed" in ci.stdout and "TIER 2 NOT RUN" in ci.stdout, ci.stdout[-2000:]
    assert "a run that selects tier 2 and runs none of it fails" in ci.stdout
    tier1 = _pytest_with_conftest(tmp_path, PASSING, "-m", "not tier2", COMFYUI_PATH=host, CI="true")
    assert tier1.returncode == 0, tier1.stdout[-2000:]  # a tier-1-only run says so with -m "not tier2"
    nohost = _pytest_with_conftest(tmp_path, PASSING, CI="true")
    assert nohost.returncode == 1 and "TIER 2 SKIPPED" in nohost.stdout, nohost.stdout[-2000:]
