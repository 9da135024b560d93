"""cpcmd as a subprocess against a running server, over the local socket (as root, no key) and
over --url/--key (XML-RPC): the seed's examples as written, output formats, errors and hints."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import yaml

_SCRIPT = shutil.which("cpcmd", path=os.path.dirname(sys.executable))
#: The installed console script (the module when the package is not installed).
CPCMD = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "apiserver.cli.cpcmd"]
#: The environment without remote settings a developer may have exported.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("APISERVER_URL", "APISERVER_KEY", "APISERVER_CONFIG")}


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Cpcmd:
    """Runs cpcmd against one server in one mode: ``socket`` (--config) or ``remote`` (--url/--key)."""

    def __init__(self, server, mode: str):
        self.server, self.mode = server, mode

    def options(self) -> list:
        if self.mode == "socket":
            return ["--config", self.server.config_path]
        return ["--url", self.server.url, "--key", self.server.admin_key]

    def __call__(self, *argv: str) -> Result:
        env = {k: v for k, v in self.server.env.items() if k not in ("APISERVER_URL", "APISERVER_KEY")}
        proc = subprocess.run(CPCMD + self.options() + list(argv), capture_output=True, text=True, env=env,
                              timeout=60)
        return Result(proc.returncode, proc.stdout.rstrip("\n"), proc.stderr)

    def ok(self, *argv: str) -> str:
        result = self(*argv)
        assert result.returncode == 0, result
        assert result.stderr == "", result
        return result.stdout


@pytest.fixture(scope="module")
def domain(running_server):
    """The seed's domain.com with an administrator and a user bob."""
    run = Cpcmd(running_server, "socket")
    run.ok("admin:add-site", "domain.com", "siteadmin", "[siteinfo.email:admin@domain.com,auth.tpasswd:Site-pass-123]")
    run.ok("-d", "domain.com", "user:add", "bob", "Bob-pass-123", "bob@domain.com")
    return "domain.com"


@pytest.fixture(params=["socket", "remote"])
def cpcmd(request, running_server, domain):
    """cpcmd over the socket, then over --url/--key."""
    return Cpcmd(running_server, request.param)


def test_seed_ip_restriction_examples_run_as_written(cpcmd):
    """get-ip-restrictions / restrict-ip 10.1.2.3 UI / remove-ip-restriction 10.1.2.3 UI as in the seed."""
    assert cpcmd.ok("-d", "domain.com", "auth:get-ip-restrictions") == "[]"
    assert cpcmd.ok("-d", "domain.com", "auth:restrict-ip", "10.1.2.3", "UI") == "true"
    listed = yaml.safe_load(cpcmd.ok("-d", "domain.com", "auth:get-ip-restrictions"))
    assert listed == [{"ip": "10.1.2.3", "gate": "UI"}]
    assert cpcmd.ok("-d", "domain.com", "auth:get-ip-restrictions", "UI") == "- ip: 10.1.2.3\n  gate: UI"
    assert cpcmd.ok("-d", "domain.com", "auth:remove-ip-restriction", "10.1.2.3", "UI") == "true"
    assert cpcmd.ok("-d", "domain.com", "auth:get-ip-restrictions") == "[]"


def test_domain_and_user_flags_act_as_that_account(cpcmd):
    """No flag: appliance admin; -d: the site's administrator; -d -u: that user."""
    assert yaml.safe_load(cpcmd.ok("common:whoami"))["role"] == "appliance"
    assert yaml.safe_load(cpcmd.ok("-d", "domain.com", "common:whoami")) == {
        "role": "site", "username": "siteadmin", "site": "domain.com"}
    assert yaml.safe_load(cpcmd.ok("-d", "domain.com", "-u", "bob", "common_whoami")) == {
        "role": "user", "username": "bob", "site": "domain.com"}


def test_output_formats(cpcmd):
    """-o json and -o yaml print the same structure; plain values print as is."""
    as_json = json.loads(cpcmd.ok("-o", "json", "-d", "domain.com", "user:get-users"))
    as_yaml = yaml.safe_load(cpcmd.ok("-o", "yaml", "-d", "domain.com", "user:get-users"))
    assert as_json == as_yaml
    assert {u["username"] for u in as_json} == {"siteadmin", "bob"}
    assert cpcmd.ok("-d", "domain.com", "common:get-email") == "admin@domain.com"
    assert cpcmd.ok("-o", "json", "-d", "domain.com", "common:get-email") == '"admin@domain.com"'


def test_json_input(cpcmd):
    """-i json reads each argument as JSON (null, strings)."""
    assert cpcmd.ok("-i", "json", "-d", "domain.com", "auth:restrict-ip", '"10.9.9.9"', "null") == "true"
    listed = yaml.safe_load(cpcmd.ok("-d", "domain.com", "auth:get-ip-restrictions"))
    assert listed == [{"ip": "10.9.9.9", "gate": None}]
    assert cpcmd.ok("-d", "domain.com", "auth:remove-ip-restriction", "10.9.9.9", "null") == "true"


def test_fault_exits_non_zero_with_the_message_on_stderr(cpcmd):
    """A fault: exit 1, nothing on stdout, code and message on stderr."""
    result = cpcmd("admin:delete-site", "nope.example.org")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("cpcmd: Client.NotFound: ") and "nope.example.org" in result.stderr


def test_unknown_command_suggests_closest_cpcmd_names(cpcmd):
    """A typo gets the closest names in cpcmd spelling and a pointer to cpcmd -l."""
    result = cpcmd("auth:restrict-ipp", "10.0.0.1")
    assert result.returncode == 1
    assert "did you mean auth:restrict-ip" in result.stderr and "cpcmd -l" in result.stderr


def test_wrong_argument_count_shows_the_signature(cpcmd):
    """Too few or too many arguments: the message carries the signature to type."""
    for argv in (["auth:restrict-ip"], ["auth:restrict-ip", "10.0.0.1", "UI", "extra"]):
        result = cpcmd("-d", "domain.com", *argv)
        assert result.returncode == 1
        assert "auth:restrict-ip(string ip, string|null gate = null): boolean" in result.stderr


def test_options_after_the_command_get_a_hint(cpcmd):
    """`cpcmd common:whoami -o json` explains that options go first."""
    result = cpcmd("common:whoami", "-o", "json")
    assert result.returncode == 1 and "options go before the command" in result.stderr


def test_bad_argument_syntax_exits_2_naming_the_position(cpcmd):
    """A malformed hash is refused locally with the position; nothing is called."""
    result = cpcmd("scope:set", "auth.geoip-key", "[id:1234,key:key-name")
    assert result.returncode == 2
    assert "unclosed '['" in result.stderr and "argument 2" in result.stderr


def test_list_and_info(cpcmd):
    """-l FILTER lists matching commands; misc:info and COMMAND --help show the signature."""
    listed = yaml.safe_load(cpcmd.ok("-l", "ip"))
    assert {"auth:restrict-ip", "auth:remove-ip-restriction", "auth:get-ip-restrictions"} <= set(listed)
    assert "common:whoami" not in listed
    assert "common:whoami" in yaml.safe_load(cpcmd.ok("-l"))
    (info,) = yaml.safe_load(cpcmd.ok("misc:info", "auth:restrict-ip"))
    assert info["signature"] == "auth:restrict-ip(string ip, string|null gate = null): boolean"
    assert yaml.safe_load(cpcmd.ok("auth:restrict-ip", "--help")) == [info]


def test_list_with_a_filter_matching_nothing_is_an_error(cpcmd):
    """-l with a filter no command matches says so on stderr and exits 1, not `[]` and 0."""
    result = cpcmd("-l", "nosuch")
    assert result.returncode == 1 and result.stdout == "", result
    assert "no command matches 'nosuch'" in result.stderr


def test_help_says_what_to_type():
    """--help shows usage, the seed examples, the argument syntax and the config lookup order."""
    proc = subprocess.run(CPCMD + ["--help"], capture_output=True, text=True, env=CLEAN_ENV, timeout=60)
    assert proc.returncode == 0
    assert "cpcmd -d domain.com auth:restrict-ip 10.1.2.3 UI" in proc.stdout
    assert "'[key:value,key2:value2]'" in proc.stdout
    lookup = " ".join(proc.stdout.split("local mode")[1].split())
    assert lookup.index("--config FILE") < lookup.index("$APISERVER_CONFIG") < lookup.index(
        "/etc/apiserver/config.ini") < lookup.index("state/config.ini")


def test_version_prints_the_package_version():
    """`cpcmd --version` prints the apiserver version it belongs to and exits 0."""
    from apiserver import __version__

    proc = subprocess.run(CPCMD + ["--version"], capture_output=True, text=True, env=CLEAN_ENV, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"cpcmd (apiserver) {__version__}", proc


def test_no_command_is_a_usage_error():
    """cpcmd without a command exits 2 and says what to try."""
    proc = subprocess.run(CPCMD, capture_output=True, text=True, env=CLEAN_ENV, timeout=60)
    assert proc.returncode == 2 and "cpcmd -l" in proc.stderr


@pytest.mark.parametrize("mode", ["socket", "remote"])
def test_seed_scope_examples_run_as_written(server_factory, mode):
    """Every scope:set line of the seed succeeds, and scope:get reads the values back."""
    server = server_factory()
    run = Cpcmd(server, mode)
    assert run.ok("scope:set", "auth.geoip-key", "[id:1234,key:key-name]") == "true"
    assert yaml.safe_load(run.ok("scope:get", "auth.geoip-key"))["id"] == 1234
    for argv in (["apache.dav", "true"], ["apache.insecure-ssl", "true"], ["mail.insecure-ssl", "true"],
                 ["cp.bootstrapper", "postfix_insecure_ssl", "true"],
                 ["cp.bootstrapper", "dovecot_insecure_ssl", "true"],
                 ["cp.bootstrapper", "haproxy_insecure_ssl", "true"], ["cp.config", "frontend", "https_only", "true"]):
        assert run.ok("scope:set", *argv) == "true", argv
    assert run.ok("scope:get", "cp.config", "frontend", "https_only") == "true"
    assert yaml.safe_load(run.ok("scope:get", "cp.bootstrapper"))["haproxy_insecure_ssl"] is True
    assert run.ok("scope:set", "auth.geoip-key", "null") == "true"  # null clears, as '[id:0,key:]' does
    assert yaml.safe_load(run.ok("scope:get", "auth.geoip-key")) == {"id": 0, "key": ""}
    refused = run("scope:set", "cp.config", "frontend", "bind")  # a config key needs a value
    assert refused.returncode == 1 and "cp.config SECTION KEY VALUE" in refused.stderr, refused
    # the value the server runs with already: in force, no "takes effect after a restart"
    running = run.ok("scope:get", "cp.config", "core", "db_threads")
    assert run.ok("scope:set", "cp.config", "core", "db_threads", running) == "true"


# --- socket only ------------------------------------------------------------------------

def test_socket_is_reached_through_state_dir_only(running_server, domain):
    """The socket is 0666 (the kernel's peer uid decides); its directory (state_dir) is 0700 but for the
    web server user's search-only ACL entry (without system accounts no site user has to reach it)."""
    mode = os.stat(running_server.socket_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o666
    directory = os.path.dirname(running_server.socket_path)
    acl = subprocess.run(["getfacl", "--omit-header", "--absolute-names", directory], capture_output=True,
                         text=True, check=True).stdout.split()
    # Sites live under state_dir: www-data may pass through (x) to reach them, never list or read.
    assert acl == ["user::rwx", "user:www-data:--x", "group::---", "mask::--x", "other::---"]


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"), reason="needs root to switch users")
def test_other_users_cannot_reach_the_socket(running_server, tmp_path):
    """A non-root user cannot connect to the socket at all."""
    probe = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n    print(type(e).__name__)\n"
             "else:\n    print('connected')\n")
    proc = subprocess.run(["/usr/bin/python3", "-c", probe, running_server.socket_path], user=65534,
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.stdout.strip() == "PermissionError"


def test_no_server_running_says_what_to_do(tmp_path):
    """With no socket, cpcmd exits 3 and says to start the server or use --url/--key."""
    config = tmp_path / "config.ini"
    config.write_text(f"[core]\nstate_dir = {tmp_path / 'state'}\n")
    proc = subprocess.run(CPCMD + ["--config", str(config), "common:whoami"], capture_output=True, text=True,
                          env=CLEAN_ENV, timeout=60)
    assert proc.returncode == 3
    assert "apiserver serve" in proc.stderr and "--url URL --key KEY" in proc.stderr


def test_missing_config_is_a_usage_error(tmp_path):
    """A config path that does not exist is named in the error (exit 2)."""
    missing = tmp_path / "nope.ini"
    proc = subprocess.run(CPCMD + ["--config", str(missing), "common:whoami"], capture_output=True, text=True,
                          env=CLEAN_ENV, timeout=60)
    assert proc.returncode == 2 and str(missing) in proc.stderr


# --- remote only ------------------------------------------------------------------------

def test_remote_settings_from_the_environment(running_server):
    """$APISERVER_URL and $APISERVER_KEY stand in for --url and --key."""
    env = dict(running_server.env, APISERVER_URL=running_server.url, APISERVER_KEY=running_server.admin_key)
    proc = subprocess.run(CPCMD + ["common:whoami"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["role"] == "appliance"


def test_remote_bad_key_is_denied(running_server):
    """A wrong key: exit 1 with Client.Denied."""
    run = Cpcmd(running_server, "remote")
    run.server = dataclasses.replace(running_server, admin_key="0" * 64)
    result = run("common:whoami")
    assert result.returncode == 1 and "Client.Denied" in result.stderr


def test_remote_https_needs_insecure_for_a_self_signed_certificate(running_server):
    """HTTPS with the generated certificate fails verification with a hint; --insecure works."""
    key = ["--url", running_server.https_url, "--key", running_server.admin_key]
    refused = subprocess.run(CPCMD + key + ["common:whoami"], capture_output=True, text=True, env=CLEAN_ENV, timeout=60)
    assert refused.returncode == 3 and "--insecure" in refused.stderr
    accepted = subprocess.run(CPCMD + ["--insecure"] + key + ["common:whoami"], capture_output=True, text=True,
                              env=CLEAN_ENV, timeout=60)
    assert accepted.returncode == 0, accepted.stderr


def test_remote_unreachable_exits_3(running_server, tmp_path):
    """Nothing listening at --url: exit 3 naming the URL."""
    proc = subprocess.run(CPCMD + ["--url", "http://127.0.0.1:1", "--key", "x", "common:whoami"],
                          capture_output=True, text=True, env=CLEAN_ENV, timeout=60)
    assert proc.returncode == 3 and "http://127.0.0.1:1/xmlrpc" in proc.stderr


def test_socket_works_while_the_api_is_off_and_switches_it_back_on(server_factory):
    """[soap] enabled=false closes --url (HTTP 403) but not the socket, which can set cp.api true."""
    server = server_factory({"soap": {"enabled": "false"}})
    local, remote = Cpcmd(server, "socket"), Cpcmd(server, "remote")
    refused = remote("common:whoami")
    assert refused.returncode == 3 and "HTTP 403" in refused.stderr
    assert yaml.safe_load(local.ok("common:whoami"))["role"] == "appliance"
    assert local.ok("scope:set", "cp.api", "true") == "true"
    assert yaml.safe_load(remote.ok("common:whoami"))["role"] == "appliance"


def test_root_on_the_socket_is_not_locked_out_by_ip_restrictions(server_factory):
    """Restrictions that refuse every address still let root on the socket in to undo them."""
    server = server_factory()
    local, remote = Cpcmd(server, "socket"), Cpcmd(server, "remote")
    local.ok("auth:restrict-ip", "192.0.2.1", "SOAP")
    refused = remote("common:whoami")
    assert refused.returncode == 1 and "Client.Denied" in refused.stderr
    assert yaml.safe_load(local.ok("common:whoami"))["role"] == "appliance"
    local.ok("auth:remove-ip-restriction", "192.0.2.1", "SOAP")
    assert yaml.safe_load(remote.ok("common:whoami"))["role"] == "appliance"
