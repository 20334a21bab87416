"""Tier 1: .ci/run runs exactly the README's test command."""
import pathlib
import re

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
    assert re.search(r'"\$rc" -eq 5', (REPO / ".ci" / "run").read_text())
