# A Twisted application that runs twisted_pgpool next to its own services.
#
#   twistd -ny docs/examples/embedded.tac
#
# Settings come from the environment so the example runs as is against the
# demo cluster or your own servers:
#   PGPOOL_BACKENDS="127.0.0.1:5432,127.0.0.1:5433"  (first is the primary)
#   PGPOOL_PORT=9999   PGPOOL_PASSWD=/path/to/pool_passwd
import os

from twisted.application import service

from twisted_pgpool import config_from_dict, make_service

backends = [
    {"hostname": host, "port": int(port)}
    for host, port in (
        item.rsplit(":", 1)
        for item in os.environ.get("PGPOOL_BACKENDS", "127.0.0.1:5432").split(",")
    )
]
config = config_from_dict(
    {
        "listen_addresses": "127.0.0.1",
        "port": int(os.environ.get("PGPOOL_PORT", "9999")),
        "backends": backends,
        "pool_passwd": os.environ.get("PGPOOL_PASSWD", ""),
        "log_connections": True,
        "pcp_port": 0,  # no administration listener in this example
    },
    source="embedded.tac",
)

application = service.Application("my-app-with-pgpool")
pgpool = make_service(config)
pgpool.setServiceParent(application)
# ... add your own services to `application` here ...
