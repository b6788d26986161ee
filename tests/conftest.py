import sys
from pathlib import Path

# The test helpers (cases.py, graphs.py) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))
