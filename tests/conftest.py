"""Two tiers.

Tier 1 runs anywhere: the pack is loaded as a package the way ComfyUI loads it (by file
location, not by putting the repo on sys.path: the host has a top-level ``nodes`` module too),
and ``core/`` is tested directly.

Tier 2 (tests marked ``tier2``) runs the pack inside a real ComfyUI found through
``COMFYUI_PATH``, else the ComfyUI this pack sits in, else ``~/ComfyUI``.  With no host, tier 2 is skipped and
the run says so in one loud line; never silently.

Under ``CI=true`` no skip is silent: a skip fails the run unless its reason matches an entry of ``ALLOWED_SKIPS``
below (and that entry's condition holds on this host); the allow-list is printed at the end of every CI run with
how often each entry was used.  A missing prerequisite (host, chromium, llama_cpp: reasons made with
``lean_testlib.prereq``) is never on it.  A CI run that selects tier 2 but runs no tier-2 test fails too.
"""
import collections
import importlib.util
import os
import pathlib
import re
import sys

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from lean_testlib import PREREQ, harness, inproc, prereq, strict, windows_semantics  # noqa: E402

# LEAN_WINDOWS_SEMANTICS=1: the pack's own code sees Windows' mmap/os/signal and no resource/fcntl//proc (in this
# process here, in tier-2 hosts through the harness); see lean_testlib/windows_semantics.py.
if windows_semantics.enabled():
    windows_semantics.install(windows_semantics.default_prefixes(REPO))

PACK = "lean_nodes"  # the package name tier-1 tests import the pack under


def load_pack_package(name=PACK, execute_init=False):
    """Register the repo as package `name` so `import lean_nodes.core.canny` works.
    execute_init=True runs __init__.py exactly as ComfyUI's load_custom_node does."""
    if execute_init:
        spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod
    return inproc.load_pack(name)


load_pack_package()

_HOST_PATH, _HOST_WHY = harness.find_host()
_TIER2 = {"ran": False, "failed_start": None}


# ---------------------------------------------------------------- the skips CI=true accepts
class Allowed:
    """One entry of the allow-list: a skip whose reason matches `pattern` (a regex, searched) is accepted under
    CI=true when `when()` holds (None: always); `why` says why CI may run without that test."""

    def __init__(self, pattern, why, when=None, condition=""):
        self.pattern, self.why, self.when, self.condition = re.compile(pattern), why, when, condition

    def accepts(self, reason):
        return bool(self.pattern.search(reason)) and (self.when is None or self.when())


def _host_is(*versions):
    return lambda: bool(_HOST_PATH) and harness.host_version(_HOST_PATH) in versions


ALLOWED_SKIPS = [
    Allowed(r"no lazily built layers on this release",
            "lazy layers: not in ComfyUI 0.3.64 (lazily built layers came in 0.29); checked on 0.33.0",
            _host_is("0.3.64"), "host 0.3.64"),
    Allowed(r"has no mixed-precision layers",
            ".comfy_quant: ComfyUI 0.3.64 has no MixedPrecisionOps (came in 0.3.76), so its own "
            "CheckpointLoaderSimple cannot read the file either; checked on 0.33.0",
            _host_is("0.3.64"), "host 0.3.64"),
    Allowed(r"has no RAM-pressure cache",
            "RAM-pressure cache (--cache-ram): not in ComfyUI 0.3.64; its classic cache is tested by "
            "test_tier2_llm.py; checked on 0.33.0",
            _host_is("0.3.64"), "host 0.3.64"),
    Allowed(r"Z-Image: not in ComfyUI 0\.3\.64",
            "Z-Image (Lumina2 DiT at 3840, Qwen3-4B text encoder): not in ComfyUI 0.3.64; checked on 0.33.0",
            _host_is("0.3.64"), "host 0.3.64"),
    Allowed(r"Flux\.2( Klein|-dev): not in ComfyUI 0\.3\.64",
            "Flux.2 Klein and Flux.2-dev (Flux2 DiT, flux2 text-encoder type, Mistral Small 3.x): not in ComfyUI "
            "0.3.64; checked on 0.33.0",
            _host_is("0.3.64"), "host 0.3.64"),
    Allowed(r"already inside the offline namespace",
            "the nested-namespace re-run is not needed when the whole run is inside .ci/run's loopback-only "
            "namespace (LEAN_IN_NETNS=1)",
            lambda: bool(os.environ.get("LEAN_IN_NETNS")), "LEAN_IN_NETNS=1"),
]
_ALLOWED_USED = collections.Counter()
_FILE_SECONDS = collections.Counter()  # test file -> seconds of setup, call and teardown (printed under CI=true)


def pytest_runtest_logreport(report):
    _FILE_SECONDS[report.nodeid.split("::", 1)[0]] += getattr(report, "duration", 0.0) or 0.0


def pytest_configure(config):
    config.addinivalue_line("markers", "sdxl_ckpt: runs an SDXL checkpoint fixture (the full-size one, ~14 GB as "
                                       "fp32 on the CPU, for loader claims; its narrow variant for Prompt Batch and "
                                       "LoRAs); CI runs these on ComfyUI 0.33.0 only (.ci/run)")
    config.addinivalue_line("markers", "one_host: costly and the same on every host (every benchmark's smoke run; the "
                                       "distributed prompt batch's master and two workers; the tiny-Flux per-image "
                                       "LoRA check), or a variant of a claim whose host paths another case runs on "
                                       "both hosts (other strengths, presets, dtypes, formats, prompt counts); CI "
                                       "runs these on ComfyUI 0.33.0 only (.ci/run)")


def pytest_report_header(config):
    lines = [f"lean: CI={'true: missing prerequisites fail' if strict() else 'false: missing prerequisites skip'}"]
    if windows_semantics.installed():
        lines.append("lean: WINDOWS SEMANTICS for the pack's code (LEAN_WINDOWS_SEMANTICS=1): Windows' mmap, "
                     "no os.pread*/MAP_*/MADV_*/PROT_*, no resource/fcntl, no /proc")
    if _HOST_PATH:
        py = harness.host_python(_HOST_PATH)
        lines.append(f"lean tier 2: ComfyUI {harness.host_version(_HOST_PATH)} at {_HOST_PATH}, host python {py}")
        if os.path.abspath(py) != os.path.abspath(sys.executable):  # not realpath: a venv python is a link
            lines.append(f"lean tier 2: WARNING tests run with {sys.executable}, not the host's python {py}: "
                         "in-process checks may miss host packages")
    else:
        lines.append(f"lean tier 2: NO HOST ({_HOST_WHY})")
    return lines


def pytest_collection_modifyitems(config, items):
    if _HOST_PATH:
        return
    skip = pytest.mark.skip(reason=prereq(f"tier 2 skipped: no ComfyUI host found ({_HOST_WHY})"))
    for item in items:
        if "tier2" in item.keywords:
            item.add_marker(skip)


def _tier2_must_run(config):
    """CI=true and tier 2 not deselected with -m: then a run where no tier-2 test ran is a failure."""
    return strict() and not _tier2_deselected(config)


def _status_line():
    if _HOST_PATH and _TIER2["ran"]:
        return f"TIER 2 RAN: ComfyUI {harness.host_version(_HOST_PATH)} at {_HOST_PATH}"
    if _TIER2["failed_start"]:
        return f"TIER 2 FAILED TO START: {_TIER2['failed_start']}"
    if _HOST_PATH:
        return "TIER 2 NOT RUN: a host was found but no tier-2 test was selected"
    return f"TIER 2 SKIPPED: no ComfyUI host found ({_HOST_WHY}); set COMFYUI_PATH to a ComfyUI checkout"


def _tier2_missing(config):
    """The CI failure for a run that selected tier 2 but ran none of it, else None."""
    if _TIER2["ran"] or not _tier2_must_run(config) or config.getoption("collectonly", False):
        return None
    return (f"CI=true, so a run that selects tier 2 and runs none of it fails ({_status_line()}); "
            "a tier-1-only run deselects tier 2: -m \"not tier2\"")


_TIER2_MODULES_SKIPPED = []  # tier-2 modules that skipped at import in a run that deselects tier 2


def _print_slowest_files(tr, n=15):
    if not _FILE_SECONDS:
        return
    total = sum(_FILE_SECONDS.values())
    tr.write_sep("-", f"slowest test files (setup + call + teardown; {total:.0f}s in all)")
    for path, secs in _FILE_SECONDS.most_common(n):
        tr.write_line(f"  {secs:7.1f}s  {path}")


def _print_allow_list(tr):
    tr.write_sep("-", "CI=true skip allow-list (any other skip fails the run)")
    for a in ALLOWED_SKIPS:
        used = _ALLOWED_USED.get(a.pattern.pattern, 0)
        tr.write_line(f"  [{used} skipped here] /{a.pattern.pattern}/ only when {a.condition or 'always'}: {a.why}")
    for line in _deselected_by_ci(tr.config):
        tr.write_line(f"  [deselected] {line}")
    if _TIER2_MODULES_SKIPPED:
        tr.write_line(f"  [{len(_TIER2_MODULES_SKIPPED)} skipped at import, all their tests deselected] tier-2 modules "
                      f"whose import-time prerequisite is missing in this run (e.g. llama_cpp before CI installs it), "
                      f"under -m \"not tier2\": {', '.join(_TIER2_MODULES_SKIPPED)}")


def _deselected_by_ci(config):
    """What this run's -m leaves out on purpose (said beside the allow-list, so nothing is left out silently)."""
    expr = (config.getoption("markexpr", "") or "").replace(" ", "")
    out = []
    if "notsdxl_ckpt" in expr:
        out.append("sdxl_ckpt (the SDXL checkpoint tests: full-size for the loader, narrow for Prompt Batch and "
                   "LoRAs): CI runs them on ComfyUI 0.33.0 only, for time; the other host still runs the tiny SDXL "
                   "text encoder and per-image LoRAs on a tiny SDXL, and converts and drops the SDXL workflow, but "
                   "loads no SDXL checkpoint")
    if "notone_host" in expr:
        out.append("one_host (every benchmark's smoke run; the distributed prompt batch with ComfyUI-Distributed, three "
                   "ComfyUI processes; the tiny-Flux per-image LoRA check): CI runs them on ComfyUI "
                   "0.33.0 only, for time; what the benchmarks measure is tested on both hosts by the feature tests, "
                   "the distributed module passed on 0.3.64 by hand, and per-image LoRAs run on both hosts on SD1.5 "
                   "and tiny SDXL (the rows per model call) with the LoRA branch on Flux and the Flux encode; the "
                   "variants (LoRA strengths, block-weight presets, weight dtypes, GGUF quantizations, checkpoint "
                   "formats, Flux's LoRA schedule, block weights and fp8 branch, 16 prompts, Qwen-Image's tags and "
                   "fp8) each have a case that runs on both hosts through the same host code")
    return out


def pytest_terminal_summary(terminalreporter):
    line = _status_line()
    if strict():
        _print_slowest_files(terminalreporter)
        _print_allow_list(terminalreporter)
    missing = _tier2_missing(terminalreporter.config)
    if missing:
        terminalreporter.write_sep("=", missing, bold=True, red=True)
    terminalreporter.write_sep("=", line, bold=True, yellow=not _TIER2["ran"], green=_TIER2["ran"])
    status_file = os.environ.get("LEAN_TIER2_STATUS_FILE")
    if status_file:
        pathlib.Path(status_file).write_text(line + "\n")


def pytest_sessionfinish(session, exitstatus):
    if _tier2_missing(session.config) and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ---------------------------------------------------------------- tier-2 fixtures

def _host_started(host, error):
    if error is not None:
        _TIER2["failed_start"] = str(error).splitlines()[0]
    else:
        _TIER2["ran"] = True


@pytest.fixture(scope="session")
def shared_hosts(tmp_path_factory):
    """harness.HostPool: one running host per set of start flags, shared by every module that asks for those
    flags (`with shared_hosts.use(["--fp32-text-enc"], setup=fn) as h: yield h`); stopped at the end."""
    pool = harness.HostPool(tmp_path_factory, on_start=_host_started)
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def comfy(shared_hosts):
    """A running ComfyUI with this pack loaded: the pool's host with the default flags (one per session), with the
    test-only nodes of harness.HostPool in it."""
    if not _HOST_PATH:
        pytest.skip(prereq(f"tier 2 skipped: no ComfyUI host found ({_HOST_WHY})"))
    return shared_hosts.get()


@pytest.fixture(scope="session")
def sd15_ckpt():
    """Path of the cached random-weight SD1.5-layout fp16 checkpoint."""
    from lean_testlib import sd15
    return sd15.sd15_checkpoint()


@pytest.fixture(scope="session")
def sd15n_ckpt():
    """Path of the SD1.5 fixture's narrow variant (every SD1.5 key and block, the UNet at 320 channels; the text
    encoder and VAE at full size): where the claim is a storage format or a dtype, not SD1.5's widths."""
    from lean_testlib import sd15
    return sd15.sd15_checkpoint(narrow=True)


@pytest.fixture(scope="session")
def comfy_sd15(comfy, sd15_ckpt):
    """The host, with the SD1.5 fixture in models/checkpoints as lean_sd15.safetensors."""
    harness.link_model(comfy.base, "checkpoints", sd15_ckpt, "lean_sd15.safetensors")
    return comfy


def _skip_reason(rep):
    lr = rep.longrepr
    reason = str(lr[2]) if isinstance(lr, tuple) and len(lr) == 3 else str(lr or "")
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def _fail_missing_prereq(rep):
    """Under CI=true, a skip fails unless it is on ALLOWED_SKIPS (a missing prerequisite never is)."""
    if not (rep.skipped and strict()) or hasattr(rep, "wasxfail"):
        return
    reason = _skip_reason(rep)
    if PREREQ not in reason:
        for a in ALLOWED_SKIPS:
            if a.accepts(reason):
                _ALLOWED_USED[a.pattern.pattern] += 1
                return
    rep.outcome = "failed"
    rep.longrepr = (f"CI=true, so this skip is a failure: {reason}"
                    + ("" if PREREQ in reason else "  (not on the allow-list ALLOWED_SKIPS in tests/conftest.py)"))


def _tier2_deselected(config):
    """True when `-m` deselects tier-2 tests (e.g. `-m "not tier2"`)."""
    expr = config.getoption("markexpr", "") or ""
    if not expr:
        return False
    try:
        from _pytest.mark.expression import Expression
        compiled = Expression.compile(expr)
        # deselected whatever other markers a tier-2 test carries: false with every other name true, and all false
        return not any(compiled.evaluate(lambda name, _o=other, **kw: name == "tier2" or _o) for other in (True, False))
    except Exception:
        return expr.replace(" ", "") == "nottier2"


def _is_tier2_module(collector):
    path = getattr(collector, "path", None)
    if not isinstance(collector, pytest.Module) or path is None:
        return False
    try:
        return re.search(r"^pytestmark = \[?pytest\.mark\.tier2\b", pathlib.Path(path).read_text(encoding="utf-8"),
                         re.M) is not None
    except OSError:
        return False


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    rep = outcome.get_result()
    # A tier-2 module that skips at import (e.g. importorskip("llama_cpp")) under `-m "not tier2"`: its tests
    # would all be deselected, so its missing prerequisite is not one this run needs.
    if rep.skipped and _is_tier2_module(collector) and _tier2_deselected(collector.config):
        _TIER2_MODULES_SKIPPED.append(collector.nodeid)  # said beside the allow-list
        return
    _fail_missing_prereq(rep)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    _fail_missing_prereq(rep)
    if rep.when == "call" and not rep.skipped and "tier2" in item.keywords:
        _TIER2["ran"] = True
    if rep.when == "call" and rep.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, harness.ComfyHost):
                rep.sections.append(("ComfyUI server log (last 150 lines)", value.log_tail(150)))
                break
