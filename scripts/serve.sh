#!/usr/bin/env bash
# Install apiserver into .venv and start it on the embedded default (SQLite, in-process state).
# compat editable mode puts the checkout on sys.path, where twistd looks for twisted/plugins.
# The first run prints the appliance administrator's API key; later runs keep the state.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${APISERVER_VENV:-$PWD/.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip >/dev/null
"$VENV/bin/pip" install -q --config-settings editable_mode=compat -e .
"$VENV/bin/apiserver" --config conf/config.ini init
exec "$VENV/bin/apiserver" --config conf/config.ini serve
