"""Run the PHP and Perl SOAP client scripts of this directory and return what they decoded."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))


def _run(command: list, job: dict) -> list:
    proc = subprocess.run(command, input=json.dumps(job), capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise AssertionError(f"{command[0]} client failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def php_calls(calls: list, *, location: str, wsdl: Optional[str] = None, cookie: Optional[str] = None) -> list:
    """PHP SoapClient: WSDL mode when ``wsdl`` is given, else non-WSDL mode (location + uri)."""
    job = {"mode": "wsdl" if wsdl else "nonwsdl", "wsdl": wsdl, "location": location, "cookie": cookie,
           "calls": calls}
    return _run(["php", os.path.join(HERE, "soap_call.php")], job)


def perl_calls(calls: list, *, proxy: str, cookie: Optional[str] = None) -> list:
    """Perl SOAP::Lite with ->proxy(proxy)->uri('urn:net.apnscp.soap')."""
    return _run(["perl", os.path.join(HERE, "soap_call.pl")], {"proxy": proxy, "cookie": cookie, "calls": calls})
