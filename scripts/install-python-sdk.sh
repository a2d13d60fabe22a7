#!/usr/bin/env bash
# Installs Alibaba Cloud's official Python SDKs (alibabacloud-ecs20140526,
# alibabacloud-sts20150401 and aliyun-python-sdk-core, every dependency pinned
# and hash-checked) into .venv
# at the repository root, for the peer tests in tests/python_peer.rs.
#
# Idempotent and fast when done: a stamp in .venv records the sha256 of
# scripts/python-requirements.txt, and nothing is installed while it matches.
# PYTHON=/path/to/python3.x overrides the interpreter (default python3.11).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="$root/scripts/python-requirements.txt"
venv="$root/.venv"
stamp="$venv/.python-requirements.sha256"
python="${PYTHON:-python3.11}"

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "install-python-sdk: $venv is up to date"
    exit 0
fi

if ! command -v "$python" >/dev/null 2>&1; then
    # NB: the pins were resolved for 3.11, but carry every file's hash, so
    # another Python 3.9+ works too when 3.11 is not installed.
    if [[ -z "${PYTHON:-}" ]] && command -v python3 >/dev/null 2>&1 \
        && python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))'; then
        echo "install-python-sdk: python3.11 not found, using $(python3 --version)"
        python=python3
    else
        echo "install-python-sdk: $python not found; install Python 3.11 (apt-get install python3.11 python3.11-venv) or set PYTHON=/path/to/python3" >&2
        exit 1
    fi
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "install-python-sdk: creating $venv with $python"
    "$python" -m venv "$venv"
fi
rm -f "$stamp"
echo "install-python-sdk: installing pinned SDKs from $requirements"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --require-hashes -r "$requirements"
# Fail here, not in the tests, if an import is broken.
"$venv/bin/python" -c 'import alibabacloud_ecs20140526.client, alibabacloud_sts20150401.client, alibabacloud_tea_openapi.models, aliyunsdkcore.client, aliyunsdkcore.request'
echo "$want" > "$stamp"
echo "install-python-sdk: done ($venv)"
