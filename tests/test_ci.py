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
    cmd = readme_test_command()
    assert "pytest" in cmd
    ci_lines = [l.strip() for l in (REPO / ".ci" / "run").read_text().splitlines()]
    runs = [l for l in ci_lines if l == cmd or l.endswith(" " + cmd)]
    assert len(runs) == 2, f".ci/run does not run the README's test command {cmd!r} (offline and plain)"


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
