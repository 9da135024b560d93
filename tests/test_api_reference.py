"""docs/api.md: generated from the modules' declarations (as the WSDLs are), committed without
drift, and naming every operation both committed WSDLs serve."""

from __future__ import annotations

import os

from lxml import etree

from apiserver.api_reference import COMMITTED_FILE, REGENERATE_COMMAND, own_faults, render_reference
from apiserver.transport.wsdl import COMMITTED_FILES, builtin_registry
from tests.conftest import ROOT


def _committed() -> str:
    with open(os.path.join(ROOT, COMMITTED_FILE), encoding="utf-8") as fh:
        return fh.read()


def test_committed_reference_matches_the_declarations():
    """docs/api.md is exactly what the built-in modules' declarations render."""
    assert _committed() == render_reference(builtin_registry()), \
        f"{COMMITTED_FILE} is out of date; regenerate with: {REGENERATE_COMMAND}"


def test_every_operation_of_both_wsdls_has_a_section():
    """Each operation of wsdl/apnscp.wsdl and wsdl/apnscp-document.wsdl has its own heading with signature and roles."""
    text = _committed()
    operations = set()
    for relative in COMMITTED_FILES.values():
        tree = etree.parse(os.path.join(ROOT, relative))
        operations |= set(tree.xpath("//w:portType/w:operation/@name",
                                     namespaces={"w": "http://schemas.xmlsoap.org/wsdl/"}))
    assert len(operations) > 40
    for operation in sorted(operations):
        assert f"\n### {operation}\n" in text, operation
        section = text.split(f"\n### {operation}\n", 1)[1].split("\n### ", 1)[0]
        assert "- **Roles**: " in section and "`" in section.split("\n")[1] and "cpcmd " in section, operation


def test_faults_a_function_raises_itself_are_listed():
    """A function whose body raises InvalidArgument (admin_get_notices) lists Client.InvalidArgument."""
    registry = builtin_registry()
    entry = registry.lookup("admin_get_notices")
    assert own_faults(registry.modules["admin"], entry.spec) == ["Client.InvalidArgument"]
    section = _committed().split("\n### admin_get_notices\n", 1)[1].split("\n### ", 1)[0]
    assert "- **Faults it raises itself**: `Client.InvalidArgument`" in section
