#!/usr/bin/env bash
# Installs the real parts tests/monitoring.rs checks the alerts and the
# dashboard with into .tools/monitoring/, every download pinned and hash-checked:
#   bin/prometheus, bin/promtool   Prometheus 2.42.0 from Debian 12's package
#                                  prometheus=2.42.0+ds-5+b6 (apt-get download,
#                                  sha256 of the .deb and of both binaries checked)
#   node_modules/                  npm ci of monitoring/tools/package-lock.json
#                                  (integrity hashes): @grafana/schema (Grafana's
#                                  published dashboard types), typescript (tsc),
#                                  @kubernetes-models/prometheus-operator (the
#                                  PrometheusRule CRD schema as validators)
#
# Idempotent and fast when done: .tools/monitoring/.stamp records the sha256 of
# this script and of the npm pins, and nothing is installed while it matches.
# Needs apt-get and dpkg-deb (Debian or Ubuntu, x86_64), node and npm.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/monitoring"
stamp="$dest/.stamp"
pins="$root/monitoring/tools"

prometheus_version=2.42.0+ds-5+b6
deb_sha256=3b0e0255b059a7696bd4a139a4a4eb24d71df067936a61ece5093559cbc7991c
prometheus_sha256=5a81c983e50f73ea63b82f5968a5838e1a7324c5ef5f0b34c61844a12ad52a99
promtool_sha256=2ae34aa57cc8a5c8ce8cf57138136c465829fd150c944a1bf4923ea4314afa5d

want="$(cat "${BASH_SOURCE[0]}" "$pins/package.json" "$pins/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$dest/bin/prometheus" \
    && -x "$dest/bin/promtool" && -x "$dest/node_modules/.bin/tsc" ]]; then
    echo "install-monitoring: $dest is up to date"
    exit 0
fi

if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
    echo "install-monitoring: the pinned Prometheus package is Debian's amd64 build, this is $(uname -s)/$(uname -m)" >&2
    exit 1
fi
for tool in apt-get dpkg-deb node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install-monitoring: need $tool (Debian 12: apt-get install nodejs npm; apt-get and dpkg-deb come with Debian)" >&2
        exit 1
    fi
done

rm -f "$stamp"
mkdir -p "$dest/bin"
download="$(mktemp -d)"
trap 'rm -rf "$download"' EXIT

echo "install-monitoring: downloading Debian's prometheus=$prometheus_version"
# NB: a machine that never ran apt-get update has no package lists: update once and retry.
if ! (cd "$download" && apt-get download "prometheus=$prometheus_version") >"$download/apt.log" 2>&1; then
    echo "install-monitoring: apt-get download failed, running apt-get update and trying again"
    if ! apt-get update -qq || ! (cd "$download" && apt-get download "prometheus=$prometheus_version"); then
        echo "install-monitoring: cannot download prometheus=$prometheus_version: it is Debian 12 (bookworm)'s package," \
            "so run this on Debian 12 as root, or add bookworm main to the apt sources" >&2
        exit 1
    fi
fi
deb="$(ls "$download"/prometheus_*.deb)"
echo "$deb_sha256  $deb" | sha256sum --check --quiet
dpkg-deb -x "$deb" "$download/root"
for binary in prometheus promtool; do
    install -m 0755 "$download/root/usr/bin/$binary" "$dest/bin/$binary.tmp"
    mv "$dest/bin/$binary.tmp" "$dest/bin/$binary"
done
echo "$prometheus_sha256  $dest/bin/prometheus" | sha256sum --check --quiet
echo "$promtool_sha256  $dest/bin/promtool" | sha256sum --check --quiet

echo "install-monitoring: npm ci of $pins/package-lock.json"
cp "$pins/package.json" "$pins/package-lock.json" "$dest/"
(cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

# Fail here, not in the tests, if something is broken.
"$dest/bin/promtool" --version 2>&1 | head -1
"$dest/bin/prometheus" --version 2>&1 | head -1
"$dest/node_modules/.bin/tsc" --version
test -f "$dest/node_modules/@grafana/schema/package.json"
(cd "$dest" && node --input-type=module -e \
    'import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule"; console.log("prometheus-operator models:", PrometheusRule.kind);')

echo "$want" > "$stamp"
echo "install-monitoring: done ($dest)"
