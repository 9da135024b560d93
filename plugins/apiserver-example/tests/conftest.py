"""Reuse apiserver's own server fixtures (``running_server``) for the plugin's end-to-end tests.

The plugin lives inside the apiserver checkout (``plugins/apiserver-example``), so its tests
start the real server exactly as apiserver's tests do, from ``tests/conftest.py`` two levels up.
"""

import importlib.util
import pathlib
import sys

_MAIN_CONFTEST = pathlib.Path(__file__).resolve().parents[3] / "tests" / "conftest.py"
_spec = importlib.util.spec_from_file_location("apiserver_tests_conftest", _MAIN_CONFTEST)
_main = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _main  # dataclasses in it look their module up there
_spec.loader.exec_module(_main)

running_server = _main.running_server
