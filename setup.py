"""
Packaging for twisted_pgpool: the package layout.  The project's metadata
(name, version, dependencies, the C{twisted-pgpool} command) is in
C{pyproject.toml}.

The twistd plugin lives in C{twisted/plugins/pgpool_plugin.py}; it is shipped
as a plain module of the C{twisted.plugins} namespace (no C{__init__.py}), which
is how Twisted discovers plugins from every entry of C{sys.path}.  Install in
editable mode with C{--config-settings editable_mode=compat} (or not
editable): the default editable mode hides the plugin from C{twistd}.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["twisted_pgpool", "twisted_pgpool.*"])
    + ["twisted.plugins"],
    package_data={"twisted": ["plugins/pgpool_plugin.py"]},
)
