import sys
from pathlib import Path

# The test helpers (cases.py, graphs.py) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402

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
    figures = config.stash.get(_FIGURES, [])
    if figures:
        terminalreporter.section("figures")
        for line in figures:
            terminalreporter.write_line(line)
