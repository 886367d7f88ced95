#!/usr/bin/env bash
# Installs what the BlueZ backend's tests need — a D-Bus daemon and a Python
# venv with python-dbusmock, which plays bluetoothd on a private bus — and
# prints the venv's python to export as GREENLIGHT_DBUSMOCK_PYTHON.
# Idempotent. libdbus itself is compiled from source by the `dbus` crate's
# "vendored" feature, so no -dev package is needed.
# Usage: export GREENLIGHT_DBUSMOCK_PYTHON="$(bash .ci/bluez.sh)"
set -euo pipefail
DBUSMOCK_VERSION=0.38.1
# Debian's python has python3-dbus (dbus-python needs libdbus headers and a
# compiler to build from PyPI); the venv sees it through --system-site-packages.
SYSTEM_PYTHON=/usr/bin/python3
venv="${XDG_CACHE_HOME:-$HOME/.cache}/greenlight/dbusmock-venv"

packages=(dbus python3-dbus python3-venv)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing ${missing[*]} and this is not root: apt-get install ${packages[*]}" >&2
        exit 1
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >&2
fi

if ! "$venv/bin/python" -c 'import dbus' >/dev/null 2>&1; then
    rm -rf "$venv"
    "$SYSTEM_PYTHON" -m venv --system-site-packages "$venv" >&2
fi
installed=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("python-dbusmock"))' 2>/dev/null || true)
if [ "$installed" != "$DBUSMOCK_VERSION" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "python-dbusmock==$DBUSMOCK_VERSION" >&2
fi
"$venv/bin/python" -c 'import dbusmock.templates.bluez5' >&2
echo "$venv/bin/python"
