"""Placeholder: implemented on its own branch (see apiserver/modules/security.py for the calls)."""


def check_tree(home, site_path):
    """Blocking.  Findings for every .htaccess at or under ``site_path``."""
    raise NotImplementedError


def apache_policy() -> str:
    raise NotImplementedError
