#!/usr/bin/env python3
"""Line coverage of C++ source folders from a ``--coverage`` build (the sanitizer build), one line each:

    python scripts/gcov_summary.py build-sanitize plugins/core plugins/cpu

Runs ``gcov --json-format --stdout`` on every ``.gcda`` of the build and merges the line counts over
translation units (a header's line counts as run when any unit ran it), so each source line is counted
once. Counts come from every instrumented process since the build (ctest, then scripts/sanitize_tests.sh).
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path


def line_counts(build: Path, root: Path) -> dict[Path, dict[int, bool]]:
    """{source file: {line number: executed}} over every .gcda under ``build``."""
    lines: dict[Path, dict[int, bool]] = defaultdict(dict)
    for gcda in sorted(build.rglob("*.gcda")):
        run = subprocess.run(["gcov", "--json-format", "--stdout", "--object-directory", str(gcda.parent), str(gcda)],
                             capture_output=True, text=True, cwd=gcda.parent)
        if run.returncode != 0:
            print(f"gcov_summary: gcov failed on {gcda}: {run.stderr.strip()}", file=sys.stderr)
            continue
        for document in run.stdout.splitlines():
            if not document.strip():
                continue
            for entry in json.loads(document).get("files", []):
                path = Path(entry["file"])
                path = (root / path if not path.is_absolute() else path).resolve()
                for line in entry.get("lines", []):
                    number = line["line_number"]
                    lines[path][number] = lines[path].get(number, False) or line["count"] > 0
    return lines


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parent.parent
    build = (root / argv[0]).resolve()
    counts = line_counts(build, root)
    if not counts:
        print(f"gcov_summary: no coverage data (.gcda) under {build}: build with --coverage and run the tests",
              file=sys.stderr)
        return 1
    for folder in argv[1:]:
        base = (root / folder).resolve()
        files = {path: lines for path, lines in counts.items() if base in path.parents}
        total = sum(len(lines) for lines in files.values())
        covered = sum(sum(lines.values()) for lines in files.values())
        percent = 100.0 * covered / total if total else 0.0
        print(f"C++ line coverage {folder}: {percent:.1f}% ({covered} of {total} lines, {len(files)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
