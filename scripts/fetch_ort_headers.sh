#!/usr/bin/env bash
# Fetches the ONNX Runtime C/C++ API headers (Debian's libonnxruntime-dev) into
# .deps/onnxruntime/include. The custom-op library only needs the headers: it
# talks to ONNX Runtime through the OrtApi table handed to RegisterCustomOps.
#
# Uses a private apt configuration under .deps/apt so the system's package lists
# are never touched. Idempotent: does nothing when the headers are already there.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps_dir="${repo_root}/.deps"
include_dir="${deps_dir}/onnxruntime/include"
apt_dir="${deps_dir}/apt"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
package=libonnxruntime-dev

if [[ -f "${include_dir}/onnxruntime_cxx_api.h" ]]; then
    echo "fetch_ort_headers: headers already present in ${include_dir}"
    exit 0
fi

for tool in apt-get dpkg-deb; do
    if ! command -v "${tool}" >/dev/null 2>&1; then
        echo "fetch_ort_headers: '${tool}' not found; install ONNX Runtime headers yourself and pass -DORT_INCLUDE_DIR=..." >&2
        exit 1
    fi
done
if [[ ! -f "${keyring}" ]]; then
    echo "fetch_ort_headers: ${keyring} missing (apt-get install debian-archive-keyring)" >&2
    exit 1
fi

log="${apt_dir}/fetch.log"
mkdir -p "${apt_dir}"
: > "${log}"

# Downloads the package from one Debian suite into ${apt_dir}/download.
# Returns non-zero (with apt's output in ${log}) when the suite does not have it.
fetch_from_suite() {
    local suite="$1"
    local sources="${apt_dir}/sources.list"
    echo "deb [signed-by=${keyring}] http://deb.debian.org/debian ${suite} main" > "${sources}"
    rm -rf "${apt_dir}/lists" "${apt_dir}/cache" "${apt_dir}/download"
    mkdir -p "${apt_dir}/lists/partial" "${apt_dir}/cache/archives/partial" "${apt_dir}/download"
    local apt_options=(
        -o "Dir::Etc::SourceList=${sources}"
        -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=${apt_dir}/lists"
        -o "Dir::Cache=${apt_dir}/cache"
        # Our directories belong to the invoking user; apt's default '_apt'
        # download sandbox could not write there when run as root.
        -o APT::Sandbox::User="$(id -un)"
    )
    echo "== ${suite}: apt-get update" >> "${log}"
    apt-get "${apt_options[@]}" update >> "${log}" 2>&1 || return 1
    echo "== ${suite}: apt-get download ${package}" >> "${log}"
    (cd "${apt_dir}/download" && apt-get "${apt_options[@]}" download "${package}") >> "${log}" 2>&1 || return 1
    compgen -G "${apt_dir}/download/${package}_*.deb" > /dev/null
}

fetched_suite=""
for suite in sid trixie; do
    if fetch_from_suite "${suite}"; then
        fetched_suite="${suite}"
        break
    fi
done
if [[ -z "${fetched_suite}" ]]; then
    echo "fetch_ort_headers: could not download ${package} from Debian sid or trixie; apt output:" >&2
    cat "${log}" >&2
    exit 1
fi

deb_file="$(ls "${apt_dir}/download/${package}"_*.deb | head -n 1)"
deb_name="$(basename "${deb_file}")"
extract_dir="${apt_dir}/extract"
rm -rf "${extract_dir}"
dpkg-deb -x "${deb_file}" "${extract_dir}"
if [[ ! -f "${extract_dir}/usr/include/onnxruntime/onnxruntime_cxx_api.h" ]]; then
    echo "fetch_ort_headers: ${deb_file} has no usr/include/onnxruntime/onnxruntime_cxx_api.h" >&2
    exit 1
fi
mkdir -p "${include_dir}"
cp -r "${extract_dir}/usr/include/onnxruntime/." "${include_dir}/"
# The package lists are only needed for this one download; drop them (~25 MB).
rm -rf "${extract_dir}" "${apt_dir}/lists" "${apt_dir}/cache" "${apt_dir}/download"
echo "fetch_ort_headers: installed headers from ${deb_name} (Debian ${fetched_suite}) into ${include_dir}"
