"""Test support for the lifecycle tests: a folder of plan files for the application's config."""

from __future__ import annotations


def plans_config(parent, plans: dict, **keys) -> dict:
    """Test set-up: ``parent/plans`` holding a file per entry of ``plans`` (name: its text); the
    config sections naming it (``[plans] dir``, and ``keys`` of ``[plans]``)."""
    folder = parent / "plans"
    folder.mkdir()
    for name, text in plans.items():
        (folder / name).write_text(text, encoding="utf-8")
    return {"plans": {"dir": str(folder), **keys}}
