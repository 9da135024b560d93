"""The hooks through which built-in modules and third-party plugins extend apiserver.

A plugin is an object (usually a module) with functions named like these specs and marked
``@apiserver.hookimpl``; installed packages register it with an entry point in the group
``apiserver.plugins``.  Every hook's docstring says when it is called, what each argument is
and what the return value means; ``tests/test_hookspecs.py`` fails for an undocumented hook.

Hooks whose name ends in a past participle (``..._changed``, ``..._created``) are events: they
run on the reactor thread after the fact, return nothing, and must not block (hand slow work
to ``app.run_blocking``).  They are fired with ``app.fire``, so one plugin that raises is
logged and cannot stop the others or undo the action.  ``firstresult`` hooks are decisions: the first non-None answer wins.
"""

from __future__ import annotations

import pluggy

PROJECT = "apiserver"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- start-up -------------------------------------------------------------------------------

@hookspec
def apiserver_config_sections():
    """Called once before the config file is read, to collect config sections.

    Returns a list of :class:`apiserver.config.Section` that the plugin adds (its own keys,
    each with a type, a default and help text).  Keys are validated at start-up like the
    built-in ones and appear in ``scope:get cp.config``.
    """


@hookspec
def apiserver_add_modules(app):
    """Called once at start-up, after storage is ready, to collect API modules.

    ``app`` is the :class:`apiserver.app.Application`.  Returns a list of
    :class:`apiserver.module.Module` subclasses; each becomes SOAP operations, XML-RPC
    methods and cpcmd commands.  Two modules with the same ``name`` stop start-up.
    """


@hookspec
def apiserver_add_scopes(app):
    """Called once at start-up to collect scopes for ``scope:get``/``scope:set``.

    ``app`` is the application.  Returns a list of :class:`apiserver.scopes.Scope` instances.  Two scopes with the same
    name stop start-up.
    """


@hookspec
def apiserver_startup(app):
    """Called once when the server has loaded everything and is about to listen.

    ``app`` is the application.  Returns nothing; a plugin may start timers with
    ``app.clock`` here.
    """


@hookspec
def apiserver_shutdown(app):
    """Called once when the server stops (SIGTERM/SIGINT), before storage is closed.

    ``app`` is the application.  Returns nothing; may return a Deferred that the shutdown waits for.
    """


# --- around every call ----------------------------------------------------------------------

@hookspec(firstresult=True)
def apiserver_authenticate(app, username, site, password, gate, address):
    """Called on the thread pool for each password login, before the built-in account check.

    ``app`` is the application; ``username`` and ``site`` (None for the appliance administrator) name the account,
    ``password`` is the clear text, ``gate`` the :class:`apiserver.context.Gate`, ``address``
    the client address.  Return an :class:`apiserver.context.Identity` to accept the login,
    ``False`` to refuse it outright, or None to let the next source (finally the built-in
    database) decide.  IP restrictions and Anvil still apply to an accepted login.
    """


@hookspec(firstresult=True)
def apiserver_call(ctx, function, args):
    """Wraps every module function call, whatever the dialect or gate (around-call hook).

    Implement it with ``@hookimpl(wrapper=True)``; the built-in implementation makes the call.

    ``ctx`` is the :class:`apiserver.context.CallContext`, ``function`` the
    :class:`apiserver.module.FunctionSpec`, ``args`` the validated keyword arguments (a dict
    the wrapper may change before yielding).  ``result = yield`` gives a Deferred that fires
    with the function's return value or fails with its error; the wrapper returns it (or a
    Deferred derived from it).  Raising :class:`apiserver.errors.ApiError` before the yield
    refuses the call.
    """


# --- decisions ------------------------------------------------------------------------------

@hookspec(firstresult=True)
def apiserver_validate_password(app, identity, password):
    """Called on the thread pool before a new password is stored (change, add, reset).

    ``app`` is the application, ``identity`` the account whose password is set, ``password`` the clear text.  Return a
    reason (str) to refuse it; the caller gets ``Client.InvalidArgument`` with that reason.
    Return None to accept.  ``[auth] min_pw_length`` is checked before this hook.
    """


# --- events ---------------------------------------------------------------------------------

@hookspec
def apiserver_password_changed(app, target, actor, reset, address):
    """Called after a password was stored.

    ``app`` is the application, ``target`` the :class:`apiserver.context.Identity` whose password changed, ``actor``
    who changed it (the same identity for a change of one's own password), ``reset`` True
    when the server generated the password (``auth_reset_password``), ``address`` the client
    address of the request that changed it (None when unknown).  The notices of the seed's
    table are already queued in the outbox, in the transaction that stored the password; the
    built-in trail (:mod:`apiserver.events`) records the change.
    """


@hookspec
def apiserver_api_key_created(app, owner, actor, comment):
    """Called after an API key was created.

    ``app`` is the application, ``owner`` the identity the key acts as, ``actor`` who created it, ``comment`` its
    comment.  The key itself is never passed to hooks.
    """


@hookspec
def apiserver_api_key_deleted(app, owner, actor):
    """Called after an API key was deleted.

    ``app`` is the application, ``owner`` the identity the key acted as, ``actor`` who deleted it.
    """


@hookspec
def apiserver_login_failed(app, address, gate, reason):
    """Called after an authentication failed (bad key, password or session, refused address).

    ``app`` is the application, ``address`` the client address, ``gate`` the gate, ``reason`` a short word
    (``key``, ``password``, ``session``, ``ip``).  Anvil has already counted it.
    """


@hookspec
def apiserver_login_blocked(app, address, until):
    """Called once when Anvil starts refusing an address.

    ``app`` is the application, ``address`` the refused client address (or its IPv6 network),
    ``until`` the clock time (``app.clock.seconds()``) when the block ends.
    """


@hookspec
def apiserver_scope_changed(app, name, old, new, actor):
    """Called after a scope's value changed.

    ``app`` is the application, ``name`` the scope name followed by the arguments that select
    the changed value (``cp.config frontend https_only``, ``cp.bootstrapper has_low_memory``), ``old`` and ``new`` its values (secrets already masked), ``actor``
    the identity that set it.  Plugins regenerate a service's configuration here.
    """


@hookspec
def apiserver_site_added(app, site, actor):
    """Called after a site was created.

    ``app`` is the application, ``site`` the new domain, ``actor`` the administrator who added it.
    """


@hookspec
def apiserver_site_deleted(app, site, actor):
    """Called after a site and all its users and keys were deleted.

    ``app`` is the application, ``site`` the deleted domain, ``actor`` who deleted it.
    """


# --- events of the security trail (apiserver.events records each) ---------------------------

@hookspec
def apiserver_login_succeeded(app, identity, address, gate, method):
    """Called after a login by API key (when the key is not cached) or password succeeded.

    ``app`` is the application, ``identity`` the account that logged in, ``address`` the client
    address, ``gate`` the gate (as its name), ``method`` ``key`` or ``password``.
    """


@hookspec
def apiserver_login_unblocked(app, address):
    """Called once when Anvil's block of an address ended (its ttl passed, or it was pruned).

    ``app`` is the application, ``address`` the address (or IPv6 network) that may log in again.
    """


@hookspec
def apiserver_ip_restriction_added(app, identity, ip, gate, address):
    """Called after an IP restriction entry was stored.

    ``app`` is the application, ``identity`` the account it restricts, ``ip`` the address or
    network as stored, ``gate`` its gate name (None: every gate), ``address`` the client address
    of the request.
    """


@hookspec
def apiserver_ip_restriction_removed(app, identity, ip, gate, address):
    """Called after an IP restriction entry was removed.

    ``app`` is the application, ``identity`` the account, ``ip`` and ``gate`` (None: every gate)
    the removed entry, ``address`` the client address of the request.
    """


@hookspec
def apiserver_hijack_started(app, actor, target, gate, address):
    """Called after ``admin_hijack`` opened a session acting as another account, and when
    ``cpcmd -d DOMAIN [-u USER]`` on the local socket acts as one.

    ``app`` is the application, ``actor`` the appliance administrator, ``target`` the identity
    acted as, ``gate`` the gate the session is bound to (None: every gate; ``CLI`` for the
    socket), ``address`` the client address of the request.  The session id is never passed to hooks.
    """
