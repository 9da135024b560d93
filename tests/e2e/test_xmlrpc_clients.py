"""XML-RPC end to end with three real clients: Python's xmlrpc.client, PHP's xmlrpc extension
(xmlrpc-epi) and Perl's XMLRPC::Lite, through the scenarios of the SOAP tests: sites, users,
API keys, IP restrictions and a fault."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from typing import Optional

import pytest

from tests.e2e.clients.soap_clients import site_options

PYTHON_CLIENT = textwrap.dedent('''
    import json, sys, xmlrpc.client
    job = json.load(sys.stdin)
    headers = [("Cookie", "esprit_id=" + job["cookie"])] if job["cookie"] else []
    proxy = xmlrpc.client.ServerProxy(job["url"], allow_none=True, headers=headers)
    out = []
    for method, args in job["calls"]:
        try:
            out.append({"ok": getattr(proxy, method)(*args)})
        except xmlrpc.client.Fault as fault:
            out.append({"fault": fault.faultCode, "message": fault.faultString})
    print(json.dumps(out, default=str))
''')

PHP_CLIENT = textwrap.dedent('''
    <?php
    // stdin: {"url", "cookie", "calls": [[method, [args]]]}; stdout: [{"ok": v} | {"fault": code, "message": s}]
    $job = json_decode(stream_get_contents(STDIN), true);
    $out = [];
    foreach ($job["calls"] as [$method, $args]) {
        $headers = "Content-Type: text/xml\\r\\n";
        if (!empty($job["cookie"])) { $headers .= "Cookie: esprit_id=" . $job["cookie"] . "\\r\\n"; }
        $body = xmlrpc_encode_request($method, $args, ["encoding" => "utf-8", "escaping" => "markup"]);
        $context = stream_context_create(["http" => ["method" => "POST", "header" => $headers,
                                                     "content" => $body, "ignore_errors" => true]]);
        $answer = xmlrpc_decode(file_get_contents($job["url"], false, $context), "utf-8");
        if (is_array($answer) && xmlrpc_is_fault($answer)) {
            $out[] = ["fault" => $answer["faultCode"], "message" => $answer["faultString"]];
        } else {
            $out[] = ["ok" => $answer];
        }
    }
    echo json_encode($out), "\\n";
''').lstrip()

PERL_CLIENT = textwrap.dedent('''
    use strict; use warnings; use JSON::PP; use XMLRPC::Lite;
    # stdin: {"url", "cookie", "calls": [[method, [args]]]}; stdout: [{"ok": v} | {"fault": code, "message": s}]
    local $/;
    my $job = JSON::PP->new->decode(<STDIN>);
    my $client = XMLRPC::Lite->proxy($job->{url}, timeout => 10);
    $client->transport->http_request->header(Cookie => "esprit_id=$job->{cookie}") if $job->{cookie};
    sub arg {
        my ($v) = @_;
        return XMLRPC::Data->type(boolean => ($v ? 1 : 0)) if JSON::PP::is_bool($v);
        return [map { arg($_) } @$v] if ref $v eq "ARRAY";
        return {map { $_ => arg($v->{$_}) } keys %$v} if ref $v eq "HASH";
        return $v;
    }
    my @out;
    for my $call (@{$job->{calls}}) {
        my ($method, $args) = @$call;
        my $som = $client->call($method => map { arg($_) } @$args);
        if ($som->fault) { push @out, {fault => $som->faultcode + 0, message => $som->faultstring}; }
        else { push @out, {ok => $som->result}; }
    }
    print JSON::PP->new->utf8->canonical->allow_blessed->convert_blessed->encode(\\@out), "\\n";
''')


class Client:
    """One XML-RPC client program; ``calls`` runs a list of calls in one process."""

    def __init__(self, name: str, command: list):
        self.name, self.command = name, command

    def calls(self, url: str, calls: list, cookie: Optional[str] = None) -> list:
        job = {"url": url, "cookie": cookie, "calls": calls}
        # Raw UTF-8, as a Perl or PHP program holding byte strings sends it
        proc = subprocess.run(self.command, input=json.dumps(job, ensure_ascii=False), capture_output=True,
                              text=True, encoding="utf-8", timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip(), f"{self.name} failed:\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def call(self, url: str, method: str, *args, cookie: Optional[str] = None):
        (answer,) = self.calls(url, [[method, list(args)]], cookie)
        return answer


@pytest.fixture(scope="module", params=["python", "php", "perl"])
def client(request, tmp_path_factory):
    """Each of the three clients in turn."""
    directory = tmp_path_factory.mktemp(request.param)
    if request.param == "python":
        script = directory / "client.py"
        script.write_text(PYTHON_CLIENT)
        return Client("python", [sys.executable, str(script)])
    if request.param == "php":
        request.getfixturevalue("php")
        script = directory / "client.php"
        script.write_text(PHP_CLIENT)
        return Client("php", ["php", str(script)])
    request.getfixturevalue("perl_soap_lite")
    script = directory / "client.pl"
    script.write_text(PERL_CLIENT)
    return Client("perl", ["perl", str(script)])


def endpoint(server, key: Optional[str] = None) -> str:
    return f"{server.url}/xmlrpc" + (f"?authkey={key}" if key else "")


#: A true boolean as each client decodes it (Perl has no boolean type: "1").
TRUE = (True, 1, "1")


def ok(answer):
    assert "ok" in answer, answer
    return answer["ok"]


def test_sites_users_keys_and_ip_restrictions(running_server, client):
    """The appliance admin makes a site, hijacks it, adds a user and a key; the site key
    restricts, lists and removes an IP; every step answers as the API documents."""
    domain = f"{client.name}-{uuid.uuid4().hex[:8]}.example.com"
    admin_url = endpoint(running_server, running_server.admin_key)
    site, sites, sid = client.calls(admin_url, [
        ["admin_add_site", [domain, "siteadmin", site_options(f"admin@{domain}", "Site-pass-123")]],
        ["admin.list_sites", []],
        ["admin_hijack", [domain]],
    ])
    assert ok(site) in TRUE
    assert domain in ok(sites)
    sid = ok(sid)
    added, users, who, key = client.calls(endpoint(running_server), [
        ["user_add", ["bob", "Bob-pass-123", f"bob@{domain}"]],
        ["user.get_users", []],
        ["common_whoami", []],
        ["auth_create_api_key", ["from " + client.name]],
    ], cookie=sid)
    assert ok(added) in TRUE
    assert {"bob", "siteadmin"} <= {u["username"] for u in ok(users)}
    assert ok(who)["role"] == "site" and ok(who)["site"] == domain
    site_url = endpoint(running_server, ok(key))
    answers = client.calls(site_url, [
        ["auth_restrict_ip", ["127.0.0.1", "SOAP"]],
        ["auth.restrict_ip", ["10.1.2.3", "UI"]],
        ["auth_get_ip_restrictions", []],
        ["auth_remove_ip_restriction", ["10.1.2.3", "UI"]],
        ["auth_get_ip_restrictions", ["SOAP"]],
        ["auth_get_api_keys", []],
        ["auth_remove_ip_restriction", ["127.0.0.1", "SOAP"]],
    ])
    assert [ok(a) for a in answers[:2]] in ([True, True], [1, 1], ['1', '1'])
    assert sorted((r["ip"], r["gate"]) for r in ok(answers[2])) == [("10.1.2.3", "UI"), ("127.0.0.1", "SOAP")]
    assert ok(answers[3]) in TRUE
    assert [(r["ip"], r["gate"]) for r in ok(answers[4])] == [("127.0.0.1", "SOAP")]
    keys = ok(answers[5])
    assert [k["comment"] for k in keys] == ["from " + client.name]
    assert ok(answers[6]) in TRUE


def test_fault_carries_code_and_message(running_server, client):
    """A NotFound is faultCode 404 with "Client.NotFound: ..." for every client."""
    answer = client.call(endpoint(running_server, running_server.admin_key), "admin_delete_site", "nope.example.org")
    assert answer["fault"] == 404
    assert answer["message"].startswith("Client.NotFound: ")
    assert "nope.example.org" in answer["message"]


def test_bad_key_is_denied(running_server, client):
    """A wrong key is faultCode 403 Client.Denied for every client."""
    answer = client.call(endpoint(running_server, "0" * 64), "common_whoami")
    assert answer["fault"] == 403 and answer["message"].startswith("Client.Denied: ")


def test_unknown_method_names_the_closest(running_server, client):
    """An unknown method is -32601 suggesting the right name."""
    answer = client.call(endpoint(running_server, running_server.admin_key), "auth_restrict_ipp", "10.0.0.1")
    assert answer["fault"] == -32601
    assert "auth_restrict_ip" in answer["message"]


def test_non_ascii_text_round_trips(running_server, client):
    """Non-ASCII text (Perl sends it as base64) is stored and read back unchanged."""
    url = endpoint(running_server, running_server.admin_key)
    comment = f"clé {client.name} ü"
    key = ok(client.call(url, "auth_create_api_key", comment))
    keys = ok(client.call(url, "auth_get_api_keys"))
    assert comment in [k["comment"] for k in keys]
    assert ok(client.call(url, "auth_delete_api_key", key)) in TRUE
