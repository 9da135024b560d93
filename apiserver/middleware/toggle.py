"""The API toggle: ``[soap] enabled=false`` turns the whole API off without a restart.

Read from the live config on every request, so ``Config.set`` (the ``cp.api`` and
``cp.config`` scopes) switches it at once; a hand edit of config.ini applies at the next start.  When off, ``/soap``,
``/xmlrpc`` and both WSDL URLs answer 403 with :data:`DISABLED_MESSAGE`, and
``GateKeeper.admit`` refuses the SOAP gate with ``Client.Disabled`` (a request that passed
the HTTP check just before the switch).  The local CLI socket and other gates are not the
API and keep working, as in ApisCP.
"""

from __future__ import annotations

from typing import Optional

DISABLED_MESSAGE = "the API is disabled by configuration ([soap] enabled=false)"


class ApiToggle:
    """Whether the SOAP/XML-RPC API is served right now."""

    def __init__(self, config):
        self.config = config

    def enabled(self) -> bool:
        """The current ``[soap] enabled``."""
        return self.config.get("soap", "enabled")

    def refusal(self) -> Optional[str]:
        """The reason to refuse an API request, or None while the API is enabled."""
        return None if self.enabled() else DISABLED_MESSAGE


DAV_DISABLED_MESSAGE = "WebDAV is disabled by configuration ([dav] enabled=false, scope apache.dav)"


class DavToggle:
    """Whether ``/dav/`` is served right now: ``[dav] enabled``, read live (the ``apache.dav``
    scope switches it at once)."""

    def __init__(self, config):
        self.config = config

    def enabled(self) -> bool:
        """The current ``[dav] enabled``."""
        return self.config.get("dav", "enabled")

    def refusal(self) -> Optional[str]:
        """The reason to refuse a DAV request, or None while DAV is enabled."""
        return None if self.enabled() else DAV_DISABLED_MESSAGE
