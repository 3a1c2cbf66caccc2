"""Shared test set-up: the real-Dovecot fixtures (doveadm_py.testing) and pytester for plugin-level tests."""

pytest_plugins = ["doveadm_py.testing.fixtures", "pytester"]
