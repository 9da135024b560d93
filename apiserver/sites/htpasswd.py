"""Placeholder: implemented on its own branch (see apiserver/modules/security.py for the calls)."""


def add(path, user, password, home):
    raise NotImplementedError


def verify(path, user, password):
    raise NotImplementedError


def delete(path, user, home):
    raise NotImplementedError


def users(path):
    raise NotImplementedError
