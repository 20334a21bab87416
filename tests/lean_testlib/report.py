"""RESULT lines that survive pytest's output capture: shown in the terminal summary (with or without -s),
printed, and appended to $LEAN_RESULTS_FILE when that is set.

    report.result(request.config, "RESULT bad_inputs=52 handled=52 ...")
"""
import os
import pathlib


class _Summary:
    def __init__(self):
        self.lines = []

    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.write_sep("-", "lean results")
        for line in self.lines:
            terminalreporter.write_line(line)


def result(config, line):
    print(line, flush=True)
    plugin = config.pluginmanager.get_plugin("lean_results")
    if plugin is None:
        plugin = _Summary()
        config.pluginmanager.register(plugin, "lean_results")
    plugin.lines.append(line)
    path = os.environ.get("LEAN_RESULTS_FILE")
    if path:
        with open(pathlib.Path(path), "a") as f:
            f.write(line + "\n")
