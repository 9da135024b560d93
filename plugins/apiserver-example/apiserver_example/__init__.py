"""apiserver-example: a third-party apiserver plugin, installed with pip.

apiserver finds it through the entry point ``example = apiserver_example`` in the group
``apiserver.plugins`` (see ``setup.py``) and registers this package with its plugin manager;
the functions below marked ``@hookimpl`` are the plugin.  It uses only the plugin API
(``api``, ``ctx.api``): see apiserver's docs/plugins.md.
"""

from __future__ import annotations

from apiserver.hookspecs import hookimpl

from apiserver_example.module import PLUGIN, Example, count_key
from apiserver_example.scopes import MaxTimes


@hookimpl
def apiserver_add_modules(api):
    """Contribute the ``example`` module: SOAP ``example_*``, XML-RPC ``example.*``, cpcmd ``example:*``."""
    return [Example]


@hookimpl
def apiserver_add_scopes(api):
    """Contribute the ``example.max-times`` scope (``scope:get``/``scope:set``), kept in the plugin's state."""
    return [MaxTimes(api)]


@hookimpl
def apiserver_api_key_created(api, owner):
    """Count created keys in the plugin's state store; ``example_key_stats`` reports the count.

    Events run on the reactor thread, so the database write goes to the blocking pool.
    """
    d = api.run_blocking(count_key, api.state(PLUGIN), owner.describe())
    d.addErrback(lambda failure: api.logger(PLUGIN).failure("counting a created key failed", failure))
