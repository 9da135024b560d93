#!/usr/bin/env bash
# Install apiserver into .venv and start it on the embedded default (SQLite, in-process state).
# Usage: scripts/serve.sh [--port N] [--https-port N] [--bind ADDRESS]
# Settings go to the checkout's local state/config.ini (untracked) and stay for later runs.
# The first run prints the appliance administrator's API key; later runs keep the state.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${APISERVER_VENV:-$ROOT/.venv}
CONFIG=$ROOT/state/config.ini
LINK_DIR=${APISERVER_LINK_DIR-/usr/local/bin}  # where root gets a cpcmd link; empty: none

say() { printf '==> %s\n' "$*"; }
usage() {
  cat <<'EOF'
Usage: scripts/serve.sh [--port N] [--https-port N] [--bind ADDRESS]

Install apiserver into .venv (once; again only when setup.py changes), create its state on the
first run (printing the appliance administrator's API key), then serve in the foreground
(Ctrl-C stops it).

  --port N          HTTP port, [frontend] http_port (default 2082; 0 turns HTTP off)
  --https-port N    HTTPS port, [frontend] https_port (default 2083; 0 turns HTTPS off)
  --bind ADDRESS    listen address, [frontend] bind (default 127.0.0.1)

Each option is written to the checkout's local state/config.ini (never to the tracked
conf/config.ini) and is kept for later runs; 'apiserver set SECTION KEY VALUE' and
'cpcmd scope:set cp.config SECTION KEY VALUE' change the same file.
Environment: APISERVER_VENV (default .venv), APISERVER_LINK_DIR (as root, where a cpcmd link
goes; default /usr/local/bin, empty for none).
EOF
}

settings=()  # "section key value" triples, in order
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --port|--https-port|--bind)
      [ $# -ge 2 ] || { echo "serve.sh: $1 needs a value (see --help)" >&2; exit 2; }
      option=$1 value=$2; shift 2 ;;
    --port=*|--https-port=*|--bind=*) option=${1%%=*} value=${1#*=}; shift ;;
    *) echo "serve.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  case $option in
    --port) settings+=(frontend http_port "$value") ;;
    --https-port) settings+=(frontend https_port "$value") ;;
    --bind) settings+=(frontend bind "$value") ;;
  esac
done

# 1. Install, only when the venv is new or setup.py/pyproject.toml changed since the last install
#    (delete $VENV/.apiserver-install-stamp to force it).
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtualenv $VENV"
  python3 -m venv "$VENV"
fi
stamp=$VENV/.apiserver-install-stamp
wanted=$(cat setup.py pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || [ ! -x "$VENV/bin/apiserver" ]; then
  log=$VENV/pip-install.log
  say "installing apiserver and its dependencies into $VENV (about a minute the first time; pip's output: $log)"
  if ! { "$VENV/bin/python" -m pip install --upgrade pip && "$VENV/bin/python" -m pip install -e .; } >"$log" 2>&1; then
    say "pip failed; the end of $log:"
    tail -n 25 "$log" >&2
    exit 1
  fi
  installed=$(grep '^Successfully installed' "$log" | tail -n 1 | cut -d' ' -f3- || true)
  count=$(printf '%s' "$installed" | wc -w)
  say "installed $count package(s)${installed:+: $(printf '%s' "$installed" | cut -c1-160)}$([ ${#installed} -gt 160 ] && echo ...)"
  echo "$wanted" >"$stamp"
else
  say "apiserver is installed in $VENV (setup.py unchanged since the last install)"
fi

# 2. Local settings, before init so its own lines (and the key) come last.
for ((i = 0; i < ${#settings[@]}; i += 3)); do
  "$VENV/bin/apiserver" set --config "$CONFIG" "${settings[i]}" "${settings[i+1]}" "${settings[i+2]}"
done

# 3. cpcmd on PATH: as root a link, otherwise a line saying how.
if [ "$(id -u)" = 0 ] && [ -n "$LINK_DIR" ]; then
  link=$LINK_DIR/cpcmd
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    say "$link exists and is not a link; leaving it (this checkout's cpcmd: $VENV/bin/cpcmd)"
  elif [ "$(readlink "$link" 2>/dev/null)" != "$VENV/bin/cpcmd" ]; then
    mkdir -p "$LINK_DIR"
    ln -sfn "$VENV/bin/cpcmd" "$link"
    say "cpcmd is on PATH: $link -> $VENV/bin/cpcmd"
  fi
elif ! command -v cpcmd >/dev/null 2>&1; then
  say "cpcmd is not on PATH; run: export PATH=\"$VENV/bin:\$PATH\" (or as root: ln -s $VENV/bin/cpcmd /usr/local/bin/)"
fi

# 4. State (database, secret, certificate, the administrator's key), then serve.
say "preparing the state (apiserver init; the config file is $CONFIG)"
"$VENV/bin/apiserver" init --config "$CONFIG"
say "starting apiserver serve (Ctrl-C stops it)"
exec "$VENV/bin/apiserver" serve --config "$CONFIG"
