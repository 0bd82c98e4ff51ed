"""
twisted_pgpool: a PostgreSQL middleware (pooling, load balancing, failover)
written on Twisted, speaking the v3 wire protocol on both sides.

Embedding applications use L{make_service} to get an
L{twisted.application.service.IService} built from a configuration.
"""

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "make_service",
    "load_config",
    "config_from_dict",
    "PgpoolConfig",
    "ConfigError",
    "ConfigWarning",
]


def __getattr__(name: str):  # pragma: no cover - thin lazy re-export
    # Lazy so that "import twisted_pgpool" does not import the reactor.
    if name == "make_service":
        from twisted_pgpool.service import make_service

        return make_service
    if name in ("load_config", "config_from_dict", "PgpoolConfig", "ConfigError", "ConfigWarning"):
        from twisted_pgpool import config

        # The features that check their own settings when a configuration
        # is loaded (config.register_check); neither imports the reactor.
        from twisted_pgpool.admin import manhole  # noqa: F401
        from twisted_pgpool.net import tls  # noqa: F401

        return getattr(config, name)
    raise AttributeError(name)
