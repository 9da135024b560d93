"""The documentation builds into the README's table of contents: every docs/*.md is linked from
README's Documentation list, and every relative link in README and docs resolves."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _documents() -> list:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            ROOT / "plugins" / "apiserver-example" / "README.md"]


def _anchors(text: str) -> set:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def _contents_section(readme: str) -> str:
    match = re.search(r"^## Documentation\n(.*?)^## ", readme, flags=re.M | re.S)
    assert match, "README.md has no '## Documentation' section"
    return match.group(1)


def test_every_doc_is_in_the_readme_contents():
    """Each docs/*.md appears as a link in README's Documentation list."""
    contents = _contents_section((ROOT / "README.md").read_text(encoding="utf-8"))
    linked = {target.split("#")[0] for target in LINK.findall(contents)}
    docs = sorted(f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md"))
    assert docs, "no docs/*.md found"
    missing = [doc for doc in docs if doc not in linked]
    assert not missing, f"docs missing from README's Documentation list: {missing}"


def test_relative_links_resolve():
    """Every relative link (file and #anchor) in README, docs/*.md and the example's README points at something."""
    broken = []
    for document in _documents():
        text = document.read_text(encoding="utf-8")
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (document.parent / path).resolve() if path else document
            if not resolved.exists():
                broken.append(f"{document.relative_to(ROOT)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved.read_text(encoding="utf-8")):
                broken.append(f"{document.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, f"broken links: {broken}"


def test_link_checker_notices_a_broken_link(tmp_path):
    """The anchor rule matches GitHub's for these headings, and misses are misses."""
    text = "# 1. Start\n## 11. Clients after an upgrade: WSDL caches\n"
    assert _anchors(text) == {"1-start", "11-clients-after-an-upgrade-wsdl-caches"}
    assert "2-nothing" not in _anchors(text)


def test_plugin_guide_covers_every_hook():
    """docs/plugins.md names every hookspec."""
    from apiserver import hookspecs

    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    missing = [name for name in vars(hookspecs) if name.startswith("apiserver_") and name not in guide]
    assert not missing, f"hooks missing from docs/plugins.md: {missing}"


def test_plugin_guide_lists_every_api_member():
    """docs/plugins.md documents every member of the plugin API."""
    from tests.test_plugin_api import API_MEMBERS, STATE_MEMBERS

    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    missing = [m for m in API_MEMBERS if f"api.{m}" not in guide]
    missing += [m for m in STATE_MEMBERS if m != "plugin" and f"`{m}(" not in guide]
    assert not missing, f"plugin API members missing from docs/plugins.md: {missing}"


def _python_blocks(section: str) -> list:
    """The ```python blocks of docs/plugins.md's section ``section`` (``"2."``)."""
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {section} ")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


def test_guide_examples_make_a_plugin_whose_guide_tests_pass(tmp_path):
    """The guide's module (2), config section (4) and site hook (6) make a plugin that passes the
    guide's tests (8), run with pytest as a plugin author would."""
    import os
    import subprocess
    import sys

    hook = next(b for b in _python_blocks("6.") if "def apiserver_site_added(" in b)
    package = tmp_path / "apiserver_hello"
    package.mkdir()
    (package / "__init__.py").write_text("\n".join([
        "from apiserver import hookimpl", _python_blocks("2.")[0], _python_blocks("4.")[0],
        "@hookimpl\ndef apiserver_add_modules(api):\n    return [Hello]\n", hook]))
    (tmp_path / "test_guide.py").write_text(_python_blocks("8.")[0])
    env = {k: v for k, v in os.environ.items() if k != "APISERVER_CONFIG"}
    env["PYTHONPATH"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_readme_lists_every_service_parameter():
    """docs/lifecycle.md's table of services names every declared service and each of its parameters."""
    from apiserver.lifecycle.services import SERVICES

    page = (ROOT / "docs" / "lifecycle.md").read_text(encoding="utf-8")
    rows = {}
    section = re.split(r"(?m)^#+ Sites and their services\n", page, maxsplit=1)[1]
    for line in re.split(r"(?m)^#", section, maxsplit=1)[0].splitlines():
        if line.startswith("| `"):
            cell = line.split("|")[1]
            for service in cell.replace("`", "").split(","):
                rows[service.strip()] = line.split("|")[2]
    assert set(rows) == set(SERVICES)
    for service, (_help, params) in SERVICES.items():
        missing = [name for name in params if f"`{name}`" not in rows[service]]
        assert not missing, f"docs/lifecycle.md lacks {service}.{missing}"
