"""Accounts: sites, users, passwords, API keys and sessions.

:class:`Accounts` (authentication, passwords, keys, sessions), ``directory.AccountDirectory``
(who the accounts are) and ``sites.Sites`` (adding and deleting sites and users) are what the
gates and modules use; ``initialize_state(config)`` makes what ``apiserver init`` promises.
See :mod:`apiserver.accounts.service` for which methods block.
"""

from apiserver.accounts.service import Accounts
from apiserver.accounts.state import InitResult, StateError, initialize_state, load_secret

__all__ = ["Accounts", "InitResult", "StateError", "initialize_state", "load_secret"]
