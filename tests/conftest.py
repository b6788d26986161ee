import sys
from pathlib import Path

# The test helpers (cases.py, graphs.py) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def serving_onnx(tmp_path_factory):
    """The demo model (dynamic N/H/W, custom nodes) that the serving tests run at 1x3x32x40."""
    from serving import export_demo

    return export_demo(tmp_path_factory.mktemp("serving") / "demo.onnx")
