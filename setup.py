"""Build script. The package metadata lives in pyproject.toml; this file adds the optional
native extensions (the `cpp` backend) when they can be built."""

from setuptools import setup

setup()
