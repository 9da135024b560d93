"""Placeholder: implemented on its own branch (see apiserver/modules/security.py for the calls)."""


def scan(root):
    raise NotImplementedError
