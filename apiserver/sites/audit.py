"""Placeholder: implemented on its own branch (see apiserver/modules/security.py for the calls)."""


def audit(home, site_path, web_user, requirements, union):
    """Blocking."""
    raise NotImplementedError
