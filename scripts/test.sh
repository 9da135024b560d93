#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine and run all tests.
# Usage: bash scripts/test.sh [pytest args...] [test paths: only those run]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${APISERVER_TEST_VENV:-$ROOT/.venv-test}  # apart from .venv, so the example plugin never loads into a served instance

say() { printf '==> %s\n' "$*"; }

# Debian packages: real SOAP/XML-RPC clients (PHP, Perl), openssl for the TLS checks.
need_pkgs=()
command -v php >/dev/null 2>&1 && php -m 2>/dev/null | grep -qx soap || need_pkgs+=(php-cli php-soap)
php -m 2>/dev/null | grep -qx xmlrpc || need_pkgs+=(php-xmlrpc)
perl -MSOAP::Lite -e1 2>/dev/null || need_pkgs+=(libsoap-lite-perl)
perl -MXMLRPC::Lite -e1 2>/dev/null || need_pkgs+=(libxmlrpc-lite-perl)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# The security module and DAV: real ACLs, a real Apache and its htpasswd, the cadaver DAV client, litmus.
command -v setfacl >/dev/null 2>&1 || need_pkgs+=(acl)
command -v apache2 >/dev/null 2>&1 || [ -x /usr/sbin/apache2 ] || need_pkgs+=(apache2)
command -v htpasswd >/dev/null 2>&1 || need_pkgs+=(apache2-utils)
# Fortification end to end: Debian's WordPress served by Apache with mod_php (tests/e2e/test_fortify_wordpress.py).
[ -d /usr/share/wordpress ] || need_pkgs+=(wordpress)
ls /usr/lib/apache2/modules/libphp*.so >/dev/null 2>&1 || need_pkgs+=(libapache2-mod-php)
command -v cadaver >/dev/null 2>&1 || need_pkgs+=(cadaver)
command -v litmus >/dev/null 2>&1 || need_pkgs+=(litmus)  # WebDAV conformance (tests/e2e/test_dav_state.py)
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)  # tests/test_systemd_unit.py
command -v fail2ban-client >/dev/null 2>&1 || need_pkgs+=(fail2ban)  # rampart: a real fail2ban per test (tests/rampart)
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)  # cpcmd by site users logged in over SSH (tests/e2e/test_cpcmd_site_users.py)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing Debian packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    say "missing Debian packages (run as root to install): ${need_pkgs[*]}"
  fi
fi

# Scale-out tests use the real PostgreSQL, MariaDB and Redis on loopback; start any that is down.
if [ "$(id -u)" = 0 ]; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 2>/dev/null; then
    say "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  if command -v redis-server >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
    say "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
  if command -v mariadbd >/dev/null 2>&1 && ! mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1; then
    say "starting MariaDB"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  fi
  for _ in $(seq 1 30); do
    { ! command -v mariadbd >/dev/null 2>&1 || mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1; } && break
    sleep 1
  done
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
# Installed again only when a setup.py or pyproject.toml changed (pip's output goes to a log);
# delete $VENV/.apiserver-install-stamp to force it.
stamp=$VENV/.apiserver-install-stamp
wanted=$(cat setup.py pyproject.toml plugins/apiserver-example/setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  log=$VENV/pip-install.log
  say "installing apiserver and test dependencies (pip's output: $log)"
  if ! { "$VENV/bin/python" -m pip install --upgrade pip &&
         "$VENV/bin/python" -m pip install -e ".[test]" -e plugins/apiserver-example; } >"$log" 2>&1; then
    say "pip failed; the end of $log:"
    tail -n 25 "$log" >&2
    exit 1
  fi
  installed=$(grep '^Successfully installed' "$log" | tail -n 1 | cut -d' ' -f3- || true)
  say "installed $(printf '%s' "$installed" | wc -w) package(s)"
  echo "$wanted" >"$stamp"
else
  say "apiserver and the test dependencies are installed (no setup.py changed)"
fi

say "linting (ruff.toml)"
"$VENV/bin/ruff" check apiserver tests plugins benchmarks scripts

say "running tests"
# Test paths given on the command line run alone (scripts/test.sh tests/test_config.py); none runs all.
targets=(tests plugins/apiserver-example/tests)
for arg in "$@"; do
  case $arg in -*) ;; *) [ -e "${arg%%::*}" ] && targets=() && break ;; esac
done
set +e
"$VENV/bin/python" -m pytest "${targets[@]}" "$@"
status=$?
set -e
# pytest exits 5 when it collected nothing: that is a broken suite here, not a pass.
exit $status
