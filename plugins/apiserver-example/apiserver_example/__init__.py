"""apiserver-example: a third-party apiserver plugin, installed with pip.

apiserver finds it through the entry point ``example = apiserver_example`` in the group
``apiserver.plugins`` (see ``setup.py``) and registers this package with its plugin manager;
the functions below marked ``@hookimpl`` are the plugin.
"""

from __future__ import annotations

from apiserver.hookspecs import hookimpl

from apiserver_example.module import Example
from apiserver_example.scopes import MaxTimes
from apiserver_example.state import state_of


@hookimpl
def apiserver_add_modules(app):
    """Contribute the ``example`` module: SOAP ``example_*``, XML-RPC ``example.*``, cpcmd ``example:*``."""
    return [Example]


@hookimpl
def apiserver_api_key_created(app, owner, actor, comment):
    """Count created keys; ``example_key_stats`` reports the count."""
    state_of(app).key_created(owner)


@hookimpl
def apiserver_add_scopes(app):
    """Contribute the ``example.max-times`` scope (``scope:get``/``scope:set``)."""
    return [MaxTimes()]
