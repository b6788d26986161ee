#!/usr/bin/env bash
# Run the custom-op tests against the ASan+UBSan build of the library, the sanitizer
# runtimes preloaded into Python. Any sanitizer report aborts the process and fails.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
. .venv/bin/activate
lib="$root/build-sanitize/lib/libdcn_deploy_ort.so"
[ -f "$lib" ] || { echo "sanitize: $lib is missing: run ./scripts/build_plugins.sh --sanitize" >&2; exit 1; }
asan="$(g++ -print-file-name=libasan.so)"
ubsan="$(g++ -print-file-name=libubsan.so)"
log="$(mktemp -d)/sanitizer"
# Python itself is not instrumented: leak checks would report the interpreter's own memory.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$log"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$log"
status=0
# Every custom_op test, the bad-input catalogue's included (tests/bad_inputs/: its plugin-field cases run the
# sanitizer build's tests/cpp/test_fields, found next to $lib) and the fuzz tests (tests/fuzz/).
LD_PRELOAD="$asan $ubsan" DCN_DEPLOY_ORT_LIB="$lib" python -m pytest -q -p no:cacheprovider -m "custom_op" tests || status=$?
if compgen -G "$log*" > /dev/null; then
  echo "sanitize: reports found:" >&2
  cat "$log"* >&2
  exit 1
fi
# The sanitizer build is also a --coverage build: the C++ line coverage of ctest and the run above.
python scripts/gcov_summary.py build-sanitize plugins/core plugins/cpu || status=$?
exit $status
