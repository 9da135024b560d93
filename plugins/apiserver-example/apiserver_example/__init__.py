"""apiserver-example: a third-party apiserver plugin, installed with pip.

apiserver finds it through the entry point ``example = apiserver_example`` in the group
``apiserver.plugins`` (see ``setup.py``) and registers this package with its plugin manager;
the functions below marked ``@hookimpl`` are the plugin.
"""

from __future__ import annotations

from apiserver.hookspecs import hookimpl

from apiserver_example.events import key_counter
from apiserver_example.module import Example


@hookimpl
def apiserver_add_modules(app):
    """Contribute the ``example`` module: SOAP ``example_*``, XML-RPC ``example.*``, cpcmd ``example:*``."""
    return [Example]


@hookimpl
def apiserver_api_key_created(app, owner, actor, comment):
    """Count created keys; ``example_key_stats`` reports the count."""
    key_counter(app).record(owner)
