"""Scopes: named settings an appliance administrator reads and changes at run time.

``registry``     the :class:`Scope` base class and the :class:`ScopeRegistry` of the application
``builtin``      the built-in scopes (config.ini keys, the Bootstrapper variables, GeoIP2 credentials)
``bootstrapper`` the Bootstrapper variables' store

Plugins subclass :class:`Scope` (or :class:`apiserver.plugin_api.StoredScope`) and return
instances from the ``apiserver_add_scopes`` hook.
"""

from apiserver.config import MASK, mask_secret
from apiserver.scopes.registry import Scope, ScopeRegistry

__all__ = ["MASK", "Scope", "ScopeRegistry", "mask_secret"]
