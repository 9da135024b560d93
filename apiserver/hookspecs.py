"""The hooks through which built-in modules and third-party plugins extend apiserver.

A plugin is an object (usually a module) with functions named like these specs and marked
``@apiserver.hookimpl``; installed packages register it with an entry point in the group
``apiserver.plugins``.  Every hook's docstring says when it is called, what each argument is
and what the return value means; ``tests/test_hookspecs.py`` fails for an undocumented hook.

Hooks whose name ends in a past participle (``..._changed``, ``..._created``) are events: they
run on the reactor thread after the fact, return nothing, and must not block (hand slow work
to ``api.run_blocking``).  They are fired one implementation at a time, so one plugin that
raises is logged and cannot stop the others or undo the action.  ``firstresult`` hooks are
decisions: the first non-None answer wins.

Hooks get ``api``, the :class:`apiserver.plugin_api.PluginApi`: the one surface of the server a
plugin may use.  An implementation names only the arguments it needs; one that asks for
anything else (``app``, the application of earlier versions) is refused when the plugin is
registered.  ``apiserver_config_sections`` runs before the API exists and gets nothing;
``apiserver_call`` reaches it as ``ctx.api``.  Only ``apiserver_call`` takes
``@hookimpl(wrapper=True)`` implementations: a wrapper of any other hook is refused when the
plugin is registered.  docs/plugins.md is the guide.
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

    Returns a list of :class:`apiserver.config.Section` that the plugin adds (its own keys, each
    with a type, a default and help text).  Keys are validated at start-up like the built-in ones
    and appear in ``scope:get cp.config``.
    """


@hookspec
def apiserver_add_modules(api):
    """Called once at start-up, after storage is ready, to collect API modules.

    ``api`` is the :class:`apiserver.plugin_api.PluginApi`.  Returns a list of
    :class:`apiserver.module.Module` subclasses; each becomes SOAP operations, XML-RPC methods and
    cpcmd commands.  Two modules with the same ``name`` stop start-up.
    """


@hookspec
def apiserver_add_scopes(api):
    """Called once at start-up to collect scopes for ``scope:get``/``scope:set``.

    ``api`` is the plugin API.  Returns a list of :class:`apiserver.scopes.Scope` instances.  Two
    scopes with the same name stop start-up.
    """


@hookspec
def apiserver_startup(api):
    """Called once when the server has loaded everything and bound its listeners, before it serves
    the first request (``apiserver serve`` and twistd alike).

    ``api`` is the plugin API.  Returns nothing; a plugin may start timers with ``api.clock`` here.
    """


@hookspec
def apiserver_shutdown(api):
    """Called once when the server stops (SIGTERM/SIGINT), before storage is closed.

    ``api`` is the plugin API.  Returns nothing; may return a Deferred that the shutdown waits for.
    An implementation that raises or whose Deferred fails is logged; the shutdown goes on.
    """


# --- around every call ----------------------------------------------------------------------

@hookspec(firstresult=True)
def apiserver_authenticate(api, username, site, password, gate, address):
    """Called on the thread pool for each password login, before the built-in account check.

    ``api`` is the plugin API; ``username`` and ``site`` (None for the appliance administrator) name
    the account, ``password`` is the clear text, ``gate`` the :class:`apiserver.context.Gate`,
    ``address`` the client address. Return an :class:`apiserver.context.Identity` to accept the
    login, ``False`` to refuse it outright, or None to let the next source (finally the built-in
    database) decide.  IP restrictions and Anvil still apply to an accepted login.
    """


@hookspec(firstresult=True)
def apiserver_call(ctx, function, args):
    """Wraps every module function call, whatever the dialect or gate (around-call hook).

    Implement it with ``@hookimpl(wrapper=True)``; the built-in implementation makes the call.

    ``ctx`` is the :class:`apiserver.context.CallContext` (``ctx.api`` the plugin API), ``function``
    the :class:`apiserver.module.FunctionSpec`, ``args`` the validated keyword arguments (a dict the
    wrapper may change before yielding).  ``result = yield`` gives a Deferred that fires with the
    function's return value or fails with its error; the wrapper returns it (or a Deferred derived
    from it).  Raising :class:`apiserver.errors.ApiError` before the yield refuses the call.
    """


# --- decisions ------------------------------------------------------------------------------

@hookspec(firstresult=True)
def apiserver_validate_password(api, identity, password):
    """Called on the thread pool before a new password is stored (change, add, reset).

    ``api`` is the plugin API, ``identity`` the account whose password is set, ``password`` the
    clear text.  Return a reason (str) to refuse it; the caller gets ``Client.InvalidArgument`` with
    that reason. Return None to accept. ``[auth] min_pw_length`` is checked before this hook.
    """


# --- events ---------------------------------------------------------------------------------

@hookspec
def apiserver_password_changed(api, target, actor, reset, address):
    """Called after a password was stored.

    ``api`` is the plugin API, ``target`` the :class:`apiserver.context.Identity` whose password
    changed, ``actor`` who changed it (the same identity for a change of one's own password),
    ``reset`` True when the server generated the password (``auth_reset_password``), ``address`` the
    client address of the request that changed it (None when unknown).  The notices of the seed's
    table are already queued in the outbox, in the transaction that stored the password; the
    built-in trail (:mod:`apiserver.events`) records the change.
    """


@hookspec
def apiserver_api_key_created(api, owner, actor, comment):
    """Called after an API key was created.

    ``api`` is the plugin API, ``owner`` the identity the key acts as, ``actor`` who created it,
    ``comment`` its comment.  The key itself is never passed to hooks.
    """


@hookspec
def apiserver_api_key_deleted(api, owner, actor):
    """Called after an API key was deleted.

    ``api`` is the plugin API, ``owner`` the identity the key acted as, ``actor`` who deleted it.
    """


@hookspec
def apiserver_login_failed(api, address, gate, reason):
    """Called after an authentication failed (bad key, password or session, refused address).

    ``api`` is the plugin API, ``address`` the client address, ``gate`` the gate, ``reason`` a short
    word (``key``, ``password``, ``session``, ``ip``; ``blocked`` for a DAV attempt from an address
    Anvil refuses, counted again).  Anvil has already counted it.
    """


@hookspec
def apiserver_login_blocked(api, address, until):
    """Called once when Anvil starts refusing an address.

    ``api`` is the plugin API, ``address`` the refused client address (or its IPv6 network),
    ``until`` the clock time (``api.clock.seconds()``) when the block ends.
    """


@hookspec
def apiserver_scope_changed(api, name, old, new, actor):
    """Called after a scope's value changed.

    ``api`` is the plugin API, ``name`` the scope name followed by the arguments that select the
    changed value (``cp.config frontend https_only``, ``cp.bootstrapper has_low_memory``), ``old``
    and ``new`` its values (secrets already masked), ``actor`` the identity that set it.  Plugins
    regenerate a service's configuration here.
    """


@hookspec
def apiserver_site_added(api, site, actor):
    """Called after a site was created.

    ``api`` is the plugin API, ``site`` the new domain, ``actor`` the administrator who added it.
    """


@hookspec
def apiserver_site_deleted(api, site, actor):
    """Called after a site and all its users and keys were deleted.

    ``api`` is the plugin API, ``site`` the deleted domain, ``actor`` who deleted it.
    """


@hookspec
def apiserver_site_suspended(api, site, actor, reason):
    """Called after a site was suspended (``admin_deactivate_site``): its accounts are refused at
    every gate and their sessions have ended.

    ``api`` is the plugin API, ``site`` the domain, ``actor`` who suspended it, ``reason`` the text
    given (None when none was).
    """


@hookspec
def apiserver_site_activated(api, site, actor):
    """Called after a suspended site was activated again (``admin_activate_site``).

    ``api`` is the plugin API, ``site`` the domain, ``actor`` who activated it.
    """


@hookspec
def apiserver_report_traffic(api):
    """Called on the reactor thread every ``[usage] flush_interval`` seconds, and once when the
    server stops, to collect traffic the plugin measured outside apiserver's gates (a web
    server's or an FTP server's log), which ``admin_get_usage('bandwidth')`` adds to what the
    gates carried.

    ``api`` is the plugin API.  Returns ``{site: bytes}`` carried since the previous call
    (``site`` a domain or a site id ``site<N>``, ``bytes`` a number >= 0), a Deferred firing with
    one, or None for nothing; each report counts once, on the UTC day of the flush.  A site that
    does not exist is logged and its bytes dropped; an implementation that raises is logged and
    the others still count.  Slow measuring belongs in ``api.run_blocking`` (return its Deferred).
    """

# --- events of the security trail (apiserver.events records each) ---------------------------

@hookspec
def apiserver_login_succeeded(api, identity, address, gate, method):
    """Called after a login by API key (when the key is not cached) or password succeeded.

    ``api`` is the plugin API, ``identity`` the account that logged in, ``address`` the client
    address, ``gate`` the gate (as its name), ``method`` ``key`` or ``password``.
    """


@hookspec
def apiserver_login_unblocked(api, address):
    """Called once when Anvil's block of an address ended (its ttl passed, or it was pruned).

    ``api`` is the plugin API, ``address`` the address (or IPv6 network) that may log in again.
    """


@hookspec
def apiserver_ip_restriction_added(api, identity, ip, gate, address):
    """Called after an IP restriction entry was stored.

    ``api`` is the plugin API, ``identity`` the account it restricts, ``ip`` the address or network
    as stored, ``gate`` its gate name (None: every gate), ``address`` the client address of the
    request.
    """


@hookspec
def apiserver_ip_restriction_removed(api, identity, ip, gate, address):
    """Called after an IP restriction entry was removed.

    ``api`` is the plugin API, ``identity`` the account, ``ip`` and ``gate`` (None: every gate) the
    removed entry, ``address`` the client address of the request.
    """


@hookspec
def apiserver_hijack_started(api, actor, target, gate, address):
    """Called after ``admin_hijack`` opened a session acting as another account, and when ``cpcmd -d
    DOMAIN [-u USER]`` on the local socket acts as one.

    ``api`` is the plugin API, ``actor`` the appliance administrator, ``target`` the identity acted
    as, ``gate`` the gate the session is bound to (None: every gate; ``CLI`` for the socket),
    ``address`` the client address of the request.  The session id is never passed to hooks.
    """
