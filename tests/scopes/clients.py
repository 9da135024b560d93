"""Clients for the scope and HTTPS end-to-end tests: zeep (document WSDL), cpcmd, raw HTTP, the audit table."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from typing import Optional

import requests
import zeep
from zeep.transports import Transport

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def certificate_path(server) -> str:
    """The self-signed certificate the server generated in its state_dir."""
    return os.path.join(server.state_dir, "tls-selfsigned.crt")


def zeep_service(server, https: bool = False, key: Optional[str] = None):
    """A zeep service on the document WSDL, over HTTPS verified against the generated certificate when asked."""
    session = requests.Session()
    base = server.https_url if https else server.url
    if https:
        session.verify = certificate_path(server)
        session.trust_env = False  # else $REQUESTS_CA_BUNDLE would replace the certificate given here
    client = zeep.Client(f"{base}/apnscp.wsdl?style=document", transport=Transport(session=session))
    binding = next(iter(client.wsdl.bindings))
    return client.create_service(binding, f"{base}/soap?authkey={key or server.admin_key}")


class CpcmdFailed(AssertionError):
    """cpcmd exited non-zero; ``stderr`` has its message."""

    def __init__(self, code: int, stderr: str):
        super().__init__(f"cpcmd exited {code}: {stderr}")
        self.code, self.stderr = code, stderr


def cpcmd(server, *words: str, remote: bool = False):
    """Run ``cpcmd -o json WORDS`` as a user would (local socket, or --url/--key over HTTPS); the decoded result."""
    command = [sys.executable, "-m", "apiserver.cli.cpcmd", "-o", "json"]
    if remote:
        command += ["--url", server.https_url, "--key", server.admin_key, "--insecure"]
    else:
        command += ["--config", server.config_path]
    proc = subprocess.run(command + list(words), capture_output=True, text=True, timeout=60, cwd=ROOT, env=server.env)
    if proc.returncode != 0:
        raise CpcmdFailed(proc.returncode, proc.stderr)
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def scope_changes(server) -> list:
    """``(name, actor, old_value, new_value)`` rows of the server's audit table, oldest first."""
    with sqlite3.connect(os.path.join(server.state_dir, "apiserver.db")) as db:
        return db.execute("SELECT name, actor, old_value, new_value FROM scope_changes ORDER BY id").fetchall()


def soap_post(url: str, operation: str, headers: Optional[dict] = None, verify=None) -> requests.Response:
    """A raw SOAP 1.1 call of OPERATION without arguments, to check answers at the HTTP level."""
    body = ('<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
            f'xmlns:ns="urn:net.apnscp.soap"><soap:Body><ns:{operation}/></soap:Body></soap:Envelope>')
    return requests.post(url, data=body.encode(), timeout=30, verify=verify,
                         headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{operation}"',
                                  **(headers or {})})
