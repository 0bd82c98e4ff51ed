#!/usr/bin/env bash
# Install the PostgreSQL 15 server binaries our end-to-end tests run
# (twisted_pgpool/testing/localcluster.py), and memcached for the query cache tests,
# on a fresh Debian 12 machine, as root.
#
# Idempotent: does nothing but checks when PostgreSQL 15 is already there.
# The tests start their own throw-away clusters on free loopback ports with
# pg_ctl; they never use Debian's "main" cluster or port 5432, so we ask
# postgresql-common not to create one, and stop it if an earlier install did.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
BINDIR="/usr/lib/postgresql/${PG_MAJOR}/bin"

if [ "$(id -u)" -ne 0 ]; then
    echo "install-postgres.sh: must run as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

if [ ! -x "${BINDIR}/initdb" ]; then
    apt-get update
    # postgresql-common first, so its createcluster.conf exists and can be
    # told not to create (and start) a "main" cluster when the server
    # package is installed.
    apt-get install -y --no-install-recommends postgresql-common
    if [ -f /etc/postgresql-common/createcluster.conf ]; then
        sed -i 's/^#\?\s*create_main_cluster\s*=.*/create_main_cluster = false/' \
            /etc/postgresql-common/createcluster.conf
    fi
    # On Debian 12, contrib (pg_stat_statements) ships inside postgresql-15:
    # "postgresql-contrib-15" is only a virtual package it provides.
    apt-get install -y --no-install-recommends \
        "postgresql-${PG_MAJOR}" "postgresql-client-${PG_MAJOR}"
fi

# The server packages create this user; make sure it exists regardless
# (PostgreSQL refuses to run as root, so the tests drop to it).
if ! getent passwd postgres >/dev/null; then
    getent group postgres >/dev/null || groupadd --system postgres
    useradd --system --gid postgres --home-dir /var/lib/postgresql \
        --shell /bin/bash --comment "PostgreSQL administrator" postgres
fi

# A "main" cluster from an earlier install would only hold port 5432 and
# memory; stop it if it runs (we leave its data alone).
if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _port status _rest; do
        case "${status}" in
            online*) pg_ctlcluster "${version}" "${cluster}" stop || true ;;
        esac
    done
fi

for program in initdb pg_ctl pg_basebackup postgres psql pgbench; do
    if [ ! -x "${BINDIR}/${program}" ]; then
        echo "install-postgres.sh: ${BINDIR}/${program} is missing" >&2
        exit 1
    fi
done
if [ ! -f "/usr/share/postgresql/${PG_MAJOR}/extension/pg_stat_statements.control" ]; then
    echo "install-postgres.sh: the pg_stat_statements extension is missing" >&2
    exit 1
fi

# The pgpool_recovery extension (pgpool_recovery(), pgpool_remote_start())
# for the online recovery tests (tests/test_e2e_recovery.py).
if [ ! -f "/usr/share/postgresql/${PG_MAJOR}/extension/pgpool_recovery.control" ]; then
    apt-get update
    apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}-pgpool2"
fi
if [ ! -f "/usr/share/postgresql/${PG_MAJOR}/extension/pgpool_recovery.control" ]; then
    echo "install-postgres.sh: the pgpool_recovery extension is missing" >&2
    exit 1
fi

# memcached for the query cache tests (tests/memcached_support.py starts its
# own server on a free loopback port).  Debian's package starts a system
# service on 11211; nothing needs it, so stop and disable it.
if [ ! -x /usr/bin/memcached ]; then
    apt-get update
    apt-get install -y --no-install-recommends memcached
fi
# systemctl only where systemd runs: in a container it prints "Failed to
# connect to bus" even with its output silenced.
if [ -d /run/systemd/system ] && systemctl is-enabled memcached >/dev/null 2>&1; then
    systemctl disable --now memcached 2>/dev/null || true
elif [ -x /etc/init.d/memcached ]; then
    /etc/init.d/memcached stop || true
    update-rc.d memcached disable >/dev/null 2>&1 || true
fi
if [ ! -x /usr/bin/memcached ]; then
    echo "install-postgres.sh: /usr/bin/memcached is missing" >&2
    exit 1
fi

echo "PostgreSQL ${PG_MAJOR} is ready in ${BINDIR}"
echo "memcached is ready in /usr/bin/memcached"
echo "the pgpool_recovery extension is ready"
