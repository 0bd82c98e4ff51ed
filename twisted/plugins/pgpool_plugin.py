"""
The twistd plugins: C{twistd -n pgpool -c conf.yaml}, and the
C{pgpool-epoll} reactor (C{twistd --reactor=pgpool-epoll ...}).

Unless C{--reactor} names another, the proxy runs on C{pgpool-epoll}
(L{twisted_pgpool.net.reactor.ProxyReactor}).  Only option parsing lives here;
the service is built by
L{twisted_pgpool.service.make_service}, the same function embedding
applications call.  Imports of the package are deferred so C{twistd --help}
stays fast and the reactor chosen with C{twistd --reactor} is not
pre-empted.
"""

from twisted.application.reactors import Reactor
from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    """
    Command-line options of the pgpool plugin.
    """

    synopsis = "[options]"
    longdesc = (
        "Run twisted_pgpool, a PostgreSQL proxy with connection "
        "pooling and load balancing, with the given configuration."
    )
    optParameters = [
        [
            "config",
            "c",
            "pgpool.yaml",
            "The configuration file: conf.yaml, or Pgpool-II's pgpool.conf.",
        ],
        [
            "hba-file",
            "a",
            None,
            "pool_hba.conf to use instead of the configuration's pool_hba_file (Pgpool-II's -a).",
        ],
        [
            "pcp-file",
            "F",
            None,
            "pcp.conf to use instead of the configuration's pcp_conf_file (Pgpool-II's -F).",
        ],
    ]
    optFlags = [
        ["discard-status", "D", "Ignore (and remove) <logdir>/pgpool_status: start every node up."],
    ]

    def postOptions(self) -> None:
        from twisted_pgpool.net.jit import tune_jit
        from twisted_pgpool.net.reactor import install_unless_chosen

        # Global options (--reactor among them) are parsed before ours: the
        # proxy's own reactor is the default, not a replacement.
        install_unless_chosen()
        # On PyPy, compile what each client connection runs once sooner.
        tune_jit()

        # Load and check everything here, so a user error ends twistd with
        # its message (after the warnings) and a non-zero status instead of a
        # traceback (and without the usage text a UsageError would print
        # first).
        from twisted_pgpool.cli import StartRefused, load_for_start

        try:
            self["config_object"] = load_for_start(
                self["config"], self["hba-file"], self["pcp-file"]
            )
        except StartRefused as e:
            raise SystemExit(str(e))


@implementer(IServiceMaker, IPlugin)
class PgpoolServiceMaker:
    """
    Makes the proxy service for twistd.
    """

    tapname = "pgpool"
    description = "A Pgpool-II-class PostgreSQL proxy (pooling, load balancing)."
    options = Options

    def makeService(self, options: Options):
        from twisted_pgpool.service import make_service

        return make_service(
            options["config_object"],
            discard_status=bool(options["discard-status"]),
            reload_on_sighup=True,
            exit_on_listen_failure=True,
        )


serviceMaker = PgpoolServiceMaker()

#: C{twistd --reactor=pgpool-epoll}: epoll without the per-event log
#: context (see L{twisted_pgpool.net.reactor}).
pgpoolEpollReactor = Reactor(
    "pgpool-epoll",
    "twisted_pgpool.net.reactor",
    "epoll(4) based reactor without the per-event log context (lower latency).",
)
