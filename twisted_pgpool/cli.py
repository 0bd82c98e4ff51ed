"""
The C{twisted-pgpool} command.

Sub-commands:
  - C{demo}: start a local primary + streaming standby and the proxy in
    front of them, print a connection URI, run until Ctrl-C or SIGTERM;
  - C{run -c conf.yaml}: run the proxy in the foreground (like
    C{twistd -n pgpool}, without twistd's options); C{-c} also takes
    Pgpool-II's own C{pgpool.conf};
  - C{convert pgpool.conf}: write the C{conf.yaml} form of a
    C{pgpool.conf}, comments included, to standard output;
  - C{passwd USER}: add or update a pool_passwd entry (like C{pg_md5 -m});
  - C{nodes}, C{attach N}, C{detach N}, C{promote N}, C{health N},
    C{invalidate-query-cache}, C{reload}, C{stop}, C{log-rotate},
    C{pcp-passwd USER}:
    administration over the PCP protocol (docs/administration.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING, List, Optional
from urllib.parse import quote

from twisted_pgpool import __version__

if TYPE_CHECKING:
    from twisted_pgpool.config import PgpoolConfig


def _start_logging(stream=None) -> None:
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(stream or sys.stderr)], redirectStandardIO=False
    )


def _run_service(service) -> int:
    """
    Start C{service}, run the reactor until a signal stops it, stop the
    service.  Returns 1 if the service could not start.
    """
    from twisted.internet import reactor

    try:
        service.startService()
    except Exception as e:  # the listener already logged the cause
        print(f"twisted-pgpool: could not start: {e}", file=sys.stderr)
        return 1
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


def _install_reactor() -> None:
    """
    Run the proxy on L{twisted_pgpool.net.reactor.ProxyReactor} (epoll without
    the per-event log context, busy polling when configured), unless a
    reactor is installed already (an embedding program chose one); on PyPy,
    with the JIT thresholds of L{twisted_pgpool.net.jit}.
    """
    from twisted_pgpool.net import jit, reactor

    reactor.install_unless_chosen()
    # This process is the proxy's own: on PyPy, compile what each client
    # connection runs once sooner (twisted_pgpool/net/jit.py).
    jit.tune_jit()


def demo(args: argparse.Namespace) -> int:
    """
    Start a throwaway cluster and the proxy in front of it.
    """
    _install_reactor()
    from twisted_pgpool.auth.passwd import write_entry
    from twisted_pgpool.config import config_from_dict
    from twisted_pgpool.service import make_service
    from twisted_pgpool.testing.localcluster import LocalCluster, LocalClusterError

    workdir = tempfile.mkdtemp(prefix="twisted-pgpool-demo-")
    # The servers may run as another user (postgres, when we are root):
    # let it through to its own directories, but not list or read ours.
    os.chmod(workdir, 0o711)
    cluster = LocalCluster(base_dir=os.path.join(workdir, "cluster"))
    print(
        f"starting a PostgreSQL primary and a streaming standby in {workdir} ...", file=sys.stderr
    )
    try:
        cluster.start()
    except LocalClusterError as e:
        print(f"twisted-pgpool demo: {e}", file=sys.stderr)
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        return 1
    try:
        passwd_path = os.path.join(workdir, "pool_passwd")
        write_entry(passwd_path, cluster.app_user, cluster.app_password, kind="text")
        config = config_from_dict(
            {
                "listen_addresses": args.host,
                "port": args.port,
                "backends": cluster.backends_config(),
                "pool_passwd": passwd_path,
                # The cluster trusts the superuser on loopback: it finds the
                # primary and measures the standby's delay.
                "sr_check_user": "postgres",
                "sr_check_period": 5,
                "logdir": workdir,
                # The administration port stays closed: several demos may run.
                "pcp_port": 0,
                "log_connections": True,
                "log_disconnections": True,
            },
            source="<demo>",
        )
        _start_logging()
        service = make_service(config)
        uri = (
            f"postgresql://{quote(cluster.app_user)}:"
            f"{quote(cluster.app_password)}@{args.host}:{args.port}/"
            f"{quote(cluster.app_database)}"
        )
        from twisted.internet import reactor

        def announce() -> None:
            for node in cluster.nodes:
                print(
                    f"  {node.name}: {node.host}:{node.port} ({node.data_directory})",
                    file=sys.stderr,
                )
            print("connect with:", file=sys.stderr)
            print(uri, flush=True)
            print("Ctrl-C or SIGTERM stops the proxy and the cluster.", file=sys.stderr, flush=True)

        reactor.callWhenRunning(announce)
        return _run_service(service)
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


class StartRefused(Exception):
    """
    The configuration cannot be used; C{str()} is the warnings found, then
    the error, one per line, for the terminal.
    """


def load_for_start(
    path: str, hba_file: Optional[str] = None, pcp_file: Optional[str] = None
) -> "PgpoolConfig":
    """
    Load and check a configuration (C{conf.yaml} or C{pgpool.conf}) as
    C{twistd pgpool} and C{twisted-pgpool run} do: every warning is logged
    together (shown once logging has begun), and a refusal is raised with
    the warnings before the error, so that one start shows everything to
    fix.

    @param hba_file: Pgpool-II's C{-a}: the C{pool_hba.conf} to use, relative
        to the current directory, in place of the file's C{pool_hba_file}.
    @param pcp_file: Pgpool-II's C{-F}: the same for C{pcp_conf_file}.
    @raise StartRefused: The configuration or a file it names is unusable.
    """
    from twisted_pgpool.config import ConfigError, load_config, log_warnings
    from twisted_pgpool.service import check_files

    overrides = {}
    if hba_file:
        overrides["pool_hba_file"] = os.path.abspath(hba_file)
    if pcp_file:
        overrides["pcp_conf_file"] = os.path.abspath(pcp_file)
    warnings: list = []
    try:
        config = load_config(path, warnings=warnings, overrides=overrides or None)
        check_files(config)
    except ConfigError as e:
        raise StartRefused("\n".join([str(w) for w in warnings] + [str(e)])) from None
    log_warnings(warnings)
    return config


def run(args: argparse.Namespace) -> int:
    """
    Run the proxy from a configuration file in the foreground.
    """
    _install_reactor()
    from twisted_pgpool.service import make_service

    try:
        config = load_for_start(args.config, args.hba_file, args.pcp_file)
    except StartRefused as e:
        print("\n".join(f"twisted-pgpool: {line}" for line in str(e).splitlines()), file=sys.stderr)
        return 2
    _start_logging()
    return _run_service(
        make_service(config, discard_status=args.discard_status, reload_on_sighup=True)
    )


def convert(args: argparse.Namespace) -> int:
    """
    Write the C{conf.yaml} form of a C{pgpool.conf} to standard output; the
    warnings loading it gives go to standard error.  The status is 1 when
    the result would not start the proxy yet (the reason is shown), 2 when
    the file cannot be read.
    """
    from twisted_pgpool.config import ConfigError, convert_pgpool_conf, load_config

    try:
        text, warnings = convert_pgpool_conf(args.file)
    except ConfigError as e:
        print(f"twisted-pgpool convert: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    sys.stdout.flush()
    for warning in warnings:
        print(f"twisted-pgpool convert: {warning}", file=sys.stderr)
    try:
        load_config(args.file, warnings=[])
    except ConfigError as e:
        print(
            f"twisted-pgpool convert: the result will not load until this is fixed: {e}",
            file=sys.stderr,
        )
        return 1
    return 0


#: As L{twisted_pgpool.admin.cli.ADMIN_COMMANDS}, without importing it (and
#: the PCP client) for the other sub-commands.
_ADMIN_COMMANDS = (
    "nodes",
    "attach",
    "detach",
    "promote",
    "recover",
    "health",
    "invalidate-query-cache",
    "reload",
    "stop",
    "log-rotate",
    "pcp-passwd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twisted-pgpool", description="A Pgpool-II-class PostgreSQL proxy on Twisted."
    )
    parser.add_argument("--version", action="version", version=f"twisted-pgpool {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo_parser = commands.add_parser("demo", help="start a local primary + standby and the proxy")
    demo_parser.add_argument(
        "--port", type=int, default=9999, help="port for the proxy (default 9999)"
    )
    demo_parser.add_argument(
        "--host", default="127.0.0.1", help="address for the proxy (default 127.0.0.1)"
    )
    demo_parser.set_defaults(handler=demo)
    run_parser = commands.add_parser("run", help="run the proxy in the foreground")
    run_parser.add_argument(
        "-c",
        "--config",
        default="pgpool.yaml",
        help="configuration file: conf.yaml, or Pgpool-II's pgpool.conf (default pgpool.yaml)",
    )
    run_parser.add_argument(
        "-a",
        "--hba-file",
        default=None,
        help="pool_hba.conf to use instead of the configuration's pool_hba_file (Pgpool-II's -a)",
    )
    run_parser.add_argument(
        "-F",
        "--pcp-file",
        default=None,
        help="pcp.conf to use instead of the configuration's pcp_conf_file (Pgpool-II's -F)",
    )
    run_parser.add_argument(
        "-D",
        "--discard-status",
        action="store_true",
        help="ignore the saved node status: every node starts up",
    )
    run_parser.set_defaults(handler=run)
    convert_parser = commands.add_parser(
        "convert", help="write the conf.yaml form of a pgpool.conf to standard output"
    )
    convert_parser.add_argument("file", help="Pgpool-II's pgpool.conf")
    convert_parser.set_defaults(handler=convert)
    commands.add_parser("passwd", help="add or update a pool_passwd entry", add_help=False)
    for name in _ADMIN_COMMANDS:
        commands.add_parser(
            name, add_help=False, help=f"administration: {name} (docs/administration.md)"
        )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "passwd":
        from twisted_pgpool.auth.passwd import run_passwd_command

        return run_passwd_command(argv[1:])
    if argv and argv[0] in _ADMIN_COMMANDS:
        from twisted_pgpool.admin.cli import run_admin_command

        return run_admin_command(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
