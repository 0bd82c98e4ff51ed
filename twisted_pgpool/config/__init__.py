"""
Configuration: read a user's C{conf.yaml} into frozen attrs objects.

The file is a flat YAML mapping that uses Pgpool-II's parameter names, so a
user porting a C{pgpool.conf} recognises every key. Each setting is one attrs
field whose metadata holds a I{kind}: the object that knows how to turn a YAML
value into the model's value (units, ranges, allowed words) and how to say
what it expected when it cannot. One generic loader walks the fields, so a new
setting is one new field and nothing else: the loader, the list of allowed
keys in error messages and L{documented_keys} all follow from it.

Errors are raised as L{ConfigError}, one line each, naming the file, the line
YAML gives for the key, the dotted key path and what would have been accepted.

The modules, lowest first:

  - L{errors<twisted_pgpool.config.errors>}: L{ConfigError},
    L{ConfigWarning}, logging the warnings;
  - L{kinds<twisted_pgpool.config.kinds>}: the kinds, how one value is read;
  - L{fields<twisted_pgpool.config.fields>}: a setting as an attrs field
    (kind, context, secrecy) and the generic reader of a mapping of them;
  - L{model<twisted_pgpool.config.model>}: L{PgpoolConfig}, L{BackendConfig};
  - L{checks<twisted_pgpool.config.checks>}: checks across settings, and
    those features register (L{register_check});
  - L{yamlfile<twisted_pgpool.config.yamlfile>}: YAML with line numbers;
  - L{spellings<twisted_pgpool.config.spellings>}: numbered backend keys,
    the clustering mode's keys before Pgpool-II 4.2;
  - L{display<twisted_pgpool.config.display>}: settings as shown (secrets
    masked), and the lists of keys the documentation reads;
  - L{loader<twisted_pgpool.config.loader>}: L{load_config},
    L{config_from_dict}, C{pgpool.conf} and its conversion;
  - L{pgpool_conf<twisted_pgpool.config.pgpool_conf>} (reading Pgpool-II's
    file, pure) and L{descriptions<twisted_pgpool.config.descriptions>} (one
    line per setting, generated from docs/configuration.md).

The names other code uses are imported from this package.
"""

from twisted_pgpool.config.checks import SettingError, register_check
from twisted_pgpool.config.display import (
    describe_setting,
    documented_keys,
    secret_settings,
    setting_contexts,
    settings_for_display,
    show_duration,
    show_setting,
    unclassified_settings,
)
from twisted_pgpool.config.errors import ConfigError, ConfigWarning, log_warnings
from twisted_pgpool.config.fields import RELOAD, SECRET_MASK, START, is_secret, setting_context
from twisted_pgpool.config.loader import (
    config_from_dict,
    convert_pgpool_conf,
    load_config,
    yaml_plain_keeps_value,
)
from twisted_pgpool.config.model import BackendConfig, PgpoolConfig
from twisted_pgpool.config.spellings import LEGACY_MODE_KEYS

__all__ = [
    "BackendConfig",
    "ConfigError",
    "ConfigWarning",
    "LEGACY_MODE_KEYS",
    "PgpoolConfig",
    "RELOAD",
    "SECRET_MASK",
    "START",
    "SettingError",
    "config_from_dict",
    "describe_setting",
    "documented_keys",
    "is_secret",
    "secret_settings",
    "settings_for_display",
    "show_duration",
    "show_setting",
    "setting_context",
    "setting_contexts",
    "convert_pgpool_conf",
    "load_config",
    "log_warnings",
    "register_check",
    "unclassified_settings",
    "yaml_plain_keeps_value",
]
