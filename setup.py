"""Setuptools shim; the metadata lives in pyproject.toml.

Kept so that ``twisted/plugins/cpstream_plugin.py`` installs into Twisted's
plugin directory and older pip versions can still build the project.
"""

from setuptools import setup

setup()
