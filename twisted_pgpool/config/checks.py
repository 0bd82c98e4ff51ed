"""
The checks of a configuration that span settings or need more than the
model: the loader's own (C{pool_hba_file}, C{reserved_connections}) and
those features register (L{register_check}), so that this package imports
none of the features.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Tuple, Type

import attrs

from twisted_pgpool.config.errors import ConfigError
from twisted_pgpool.config.kinds import _Context, _Where
from twisted_pgpool.config.model import PgpoolConfig


def _check_pool_hba_file(
    config: PgpoolConfig, place: Callable[[str], _Where], ctx: _Context
) -> None:
    """
    With pool_hba on, a missing file would reject every client; say so now.
    """
    if config.enable_pool_hba and not os.path.isfile(config.pool_hba_file):
        where = place("pool_hba_file")
        if where.line is None:
            where = place("enable_pool_hba")
        raise ctx.error(
            where,
            f"enable_pool_hba is on but the pool_hba_file {config.pool_hba_file} does not exist",
        )


def _check_reserved_connections(
    config: PgpoolConfig, place: Callable[[str], _Where], ctx: _Context
) -> None:
    """
    C{reserved_connections} is taken from C{num_init_children}: at least
    one session must remain.
    """
    if config.reserved_connections >= config.num_init_children:
        raise ctx.error(
            place("reserved_connections"),
            f"reserved_connections ({config.reserved_connections}) must be less "
            f"than num_init_children ({config.num_init_children})",
        )


class SettingError(Exception):
    """
    What a feature's check (L{register_check}) raises for a setting it
    refuses; the loader reports it at the setting's line.

    @ivar key: the configuration key at fault.
    @ivar reason: what is wrong, readable on its own.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


#: The checks features registered with L{register_check}, by switch.
_feature_checks: Dict[str, Tuple[Callable[["PgpoolConfig"], object], Type[SettingError]]] = {}


def register_check(
    switch: str, check: Callable[["PgpoolConfig"], object], error: Type[SettingError]
) -> None:
    """
    Have the loader run a feature's own check of its settings, so that a
    mistake is reported with the file and line of the setting rather than
    when the service is built (or, for TLS, at the first client's handshake).

    The features whose settings the model alone cannot judge (TLS files
    tried on OpenSSL, a manhole others could reach) register here when
    their module is imported -- L{twisted_pgpool.net.tls},
    L{twisted_pgpool.admin.manhole} -- so that this module imports none of
    them.  Whoever loads a configuration for a proxy imports them first:
    the service wiring (and so the twistd plugin, the C{twisted-pgpool}
    command and the reloader) and the package's L{twisted_pgpool.load_config}
    and L{twisted_pgpool.config_from_dict}.  The checks run in the order of
    their switches in L{PgpoolConfig}.

    @param switch: the setting that turns the feature on; an error about a
        setting left at its default is reported at the switch's line.
    @param check: called with each configuration loaded; does nothing when
        the feature is off.
    @param error: what C{check} raises for a setting it refuses.
    """
    _feature_checks[switch] = (check, error)


def _check_features(config: PgpoolConfig, place: Callable[[str], _Where], ctx: _Context) -> None:
    """
    Run the checks features registered (L{register_check}).
    """
    order = {name: i for i, name in enumerate(attrs.fields_dict(PgpoolConfig))}
    for switch in sorted(_feature_checks, key=order.__getitem__):
        check, error = _feature_checks[switch]
        try:
            check(config)
        except error as e:
            raise _setting_error(e.key, e.reason, switch, place, ctx) from None


def _setting_error(
    key: str, reason: str, switch: str, place: Callable[[str], _Where], ctx: _Context
) -> ConfigError:
    """
    The error for a setting a feature's own check refused, at the line of
    that setting; for a default the user never wrote, at the line of the
    setting that turned the feature on (C{switch}).
    """
    where = place(key)
    if where.line is None:
        where = _Where(key, place(switch).line)
    return ctx.error(where, reason)
