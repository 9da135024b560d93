"""Which test proves each hook, and the recorder that makes that test show it.

Every hookspec is listed in ``PROOFS`` with the test that calls a test plugin implementing it
(``tests/test_hooks_have_tests.py`` fails for a hook that is missing or names no such test).
``install_recorder`` (run by tests/conftest.py) wraps every hook implementation defined under
tests/ so that calling it is recorded; a listed test during which its hook's test plugin was
not called fails at teardown.  So a proof cannot rot into a plugin that is registered but never
reached.
"""

from __future__ import annotations

import functools
import inspect
import pathlib

TESTS = pathlib.Path(__file__).resolve().parent

#: hook name -> the test (path under tests/ :: function name) that calls a test plugin implementing it
PROOFS = {
    "apiserver_config_sections": "test_plugin_api.py::test_config_reads_plugin_and_core_keys",
    "apiserver_add_modules": "test_lifecycle_hooks.py::test_add_modules_contributes_a_callable_module",
    "apiserver_add_scopes": "test_plugin_api.py::test_stored_scope_persists_and_validates",
    "apiserver_startup": "test_lifecycle_hooks.py::test_startup_gets_the_api_and_may_start_timers_on_its_clock",
    "apiserver_shutdown": "test_lifecycle_hooks.py::test_shutdown_is_waited_for",
    "apiserver_authenticate": "accounts/test_accounts.py::test_password_rules_then_plugin_veto",
    "apiserver_call": "test_dispatch.py::test_wrapper_hook_sees_and_changes_calls",
    "apiserver_validate_password": "accounts/test_accounts.py::test_password_rules_then_plugin_veto",
    "apiserver_password_changed": "modules/test_module_auth.py::test_change_password_follows_the_role_rules",
    "apiserver_api_key_created": "modules/test_module_auth.py::test_api_keys_of_managed_accounts",
    "apiserver_api_key_deleted": "modules/test_module_auth.py::test_api_keys_of_managed_accounts",
    "apiserver_login_failed": "middleware/test_anvil.py::test_hooks_fire_for_every_failure_and_once_per_block",
    "apiserver_login_blocked": "middleware/test_anvil.py::test_hooks_fire_for_every_failure_and_once_per_block",
    "apiserver_scope_changed": "scopes/test_registry.py::test_set_records_and_fires_hook",
    "apiserver_site_added": "modules/test_module_admin.py::test_add_site_with_generated_password",
    "apiserver_site_deleted": "modules/test_module_admin.py::test_delete_site_removes_accounts_keys_and_sessions",
    "apiserver_site_suspended": "lifecycle/test_lifecycle.py::test_suspension_refuses_every_credential_once_right",
    "apiserver_site_activated": "lifecycle/test_lifecycle.py::test_suspension_refuses_every_credential_once_right",
    "apiserver_report_traffic": "lifecycle/test_usage.py::test_traffic_is_held_then_stored_with_plugin_reports",
    "apiserver_login_succeeded": "test_trail_hooks.py::test_trail_hooks_fire_on_the_reactor_thread",
    "apiserver_login_unblocked": "test_trail_hooks.py::test_trail_hooks_fire_on_the_reactor_thread",
    "apiserver_ip_restriction_added": "test_trail_hooks.py::test_trail_hooks_fire_on_the_reactor_thread",
    "apiserver_ip_restriction_removed": "test_trail_hooks.py::test_trail_hooks_fire_on_the_reactor_thread",
    "apiserver_hijack_started": "test_trail_hooks.py::test_trail_hooks_fire_on_the_reactor_thread",
}

#: hooks whose test-plugin implementations ran since the current test started
CALLED: set = set()


def proofs_of(test: str) -> list:
    """The hooks that ``test`` (``path::name``) must call a test plugin of."""
    return sorted(hook for hook, proof in PROOFS.items() if proof == test)


def _recording(hook: str, function):
    """``function`` that records ``hook`` when called (a generator stays a generator, for wrappers)."""
    if inspect.isgeneratorfunction(function):
        @functools.wraps(function)
        def recorded_wrapper(*args, **kwargs):
            CALLED.add(hook)
            return (yield from function(*args, **kwargs))
        return recorded_wrapper

    @functools.wraps(function)
    def recorded(*args, **kwargs):
        CALLED.add(hook)
        return function(*args, **kwargs)
    return recorded


def _defined_in_tests(function) -> bool:
    try:
        return TESTS in pathlib.Path(inspect.getfile(function)).resolve().parents
    except TypeError:  # a builtin or C function
        return False


def install_recorder() -> None:
    """Make every hook implementation defined under tests/ record its calls in ``CALLED``."""
    from pluggy import HookImpl

    original = HookImpl.__init__
    if getattr(original, "records_hooks", False):
        return

    def __init__(self, plugin, plugin_name, function, hook_impl_opts):
        original(self, plugin, plugin_name, function, hook_impl_opts)
        if _defined_in_tests(function):
            hook = hook_impl_opts.get("specname") or function.__name__
            object.__setattr__(self, "function", _recording(hook, function))  # argnames are already read

    __init__.records_hooks = True
    HookImpl.__init__ = __init__
