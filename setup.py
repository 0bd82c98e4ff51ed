"""
Packaging for twisted_pgpool.

The twistd plugin lives in C{twisted/plugins/pgpool_plugin.py}; it is shipped
as a plain module of the C{twisted.plugins} namespace (no C{__init__.py}), which
is how Twisted discovers plugins from every entry of C{sys.path}.
"""

from setuptools import find_packages, setup

setup(
    name="twisted_pgpool",
    version="0.1.0",
    description="A Pgpool-II-class PostgreSQL middleware on Twisted",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["twisted_pgpool", "twisted_pgpool.*"])
    + ["twisted.plugins"],
    package_data={"twisted": ["plugins/pgpool_plugin.py"]},
    install_requires=[
        # [conch]: the manhole's SSH server (twisted.conch.ssh) needs bcrypt and appdirs.
        "twisted[conch]>=22.10",
        "attrs>=22.1",
        "service-identity>=21.1",
        "pyopenssl>=22.0",
        "pyyaml>=5.4",
        "zope.interface>=5.4",
    ],
    extras_require={
        "test": [
            "hypothesis>=6.0",
            "psycopg[binary]>=3.1",
            "asyncpg>=0.27",
            "pg8000>=1.29",
        ],
    },
    entry_points={
        "console_scripts": ["twisted-pgpool = twisted_pgpool.cli:main"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Database",
    ],
)
