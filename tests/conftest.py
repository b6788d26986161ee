import sys
from pathlib import Path

# The test helpers (cases.py, graphs.py) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Property-based fuzzing (tests/fuzz/): a fixed, derandomized budget in every run ("ci"), a longer random
# one with `pytest --fuzz` ("fuzz"). max_examples is per test.
FUZZ_PROFILES = {
    "ci": dict(max_examples=50, derandomize=True, deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]),
    "fuzz": dict(max_examples=1000, derandomize=False, deadline=None, print_blob=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]),
}
for _name, _options in FUZZ_PROFILES.items():
    settings.register_profile(_name, **_options)


def pytest_addoption(parser):
    parser.addoption("--fuzz", action="store_true", default=False,
                     help="fuzz tests with the long hypothesis profile 'fuzz' (1000 random examples per test) "
                          "instead of 'ci' (50 fixed examples)")


def pytest_configure(config):
    settings.load_profile("fuzz" if config.getoption("--fuzz") else "ci")


def _reports(terminalreporter, marker):
    """(passed, failed, skipped) test reports of the items carrying ``marker``."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    duration = 0.0
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if marker not in getattr(report, "keywords", {}):
                continue
            if outcome == "skipped":
                counts["skipped"] += 1
            elif report.when == "call" and outcome == "passed":
                counts["passed"] += 1
                duration += report.duration
            elif outcome in ("failed", "error"):
                counts["failed"] += 1
    return counts, duration


_FIGURES = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def serving_onnx(tmp_path_factory):
    """The demo model (dynamic N/H/W, custom nodes) that the serving tests run at 1x3x32x40."""
    from serving import export_demo

    return export_demo(tmp_path_factory.mktemp("serving") / "demo.onnx")


@pytest.fixture
def report_figure(request):
    """``report_figure("soak: ...")``: a line for the "figures" section at the end of the run, shown
    under -q too (measured numbers such as a soak's memory growth belong in the log, not only in asserts)."""
    return request.config.stash.setdefault(_FIGURES, []).append


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """A "figures" section, shown under -q too: the bad-input catalogue's count and verdict, the fuzz budget
    and result, and the lines tests gave ``report_figure``."""
    lines = []
    counts, _ = _reports(terminalreporter, "bad_input")
    total = sum(counts.values())
    if total:
        verdict = ("all handled" if not counts["failed"] and not counts["skipped"] else
                   f"{counts['passed']} handled, {counts['failed']} FAILED, {counts['skipped']} skipped")
        lines.append(f"bad-input catalogue: {total} cases, {verdict}")
    counts, duration = _reports(terminalreporter, "fuzz")
    total = sum(counts.values())
    if total:
        profile = settings.get_current_profile_name()
        budget = settings.get_profile(profile)
        lines.append(
            f"fuzz (hypothesis profile '{profile}': max_examples={budget.max_examples} per test, "
            f"derandomize={budget.derandomize}): {total} tests, {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped, {duration:.1f} s")
    lines += config.stash.get(_FIGURES, [])
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)
