#!/usr/bin/env python3
"""
Run a PostgreSQL client library's own test suite against the primary
directly and through the proxy, and list the tests that pass directly but
not through the proxy.

A client library's suite exercises the protocol far more thoroughly than
our own end-to-end tests can: cancellation, COPY in every direction,
pipelines, prepared statements, two-phase commit, notifications, odd types.
Every test that passes against PostgreSQL itself and fails through the
proxy is a place where the proxy does not behave like the server it stands
in for -- or a documented limit.  This script measures exactly that.

Three targets, each on a fresh throw-away cluster and a fresh database, so
that one run cannot disturb the next:

  - C{direct}: the primary itself (the reference);
  - C{single}: the proxy in front of the primary alone, load balancing off;
  - C{balanced}: the proxy in front of the primary and a streaming standby,
    weights 1:2, load balancing on, C{read_your_writes: session}.

The suite runs in a subprocess with the interpreter given by C{--python}
(a separate virtualenv holding the library, pytest, pytest-timeout and the
suite's test requirements: see docs/conformance.md), with C{--junitxml} so
that results are read per test.  The proxy runs with this interpreter, the
project's own, as a C{twistd} child (L{tests.support.ProxyProcess}).

Run from the repository root with the project's interpreter::

    .venv/bin/python conformance/run.py psycopg /work/suites/psycopg-3.3.4 \\
        --python /work/suites/venv/bin/python
    .venv/bin/python conformance/run.py asyncpg /work/suites/asyncpg-0.32.0 \\
        --python /work/suites/venv/bin/python

Output goes to C{--output} (default C{conformance/results/<suite>/}): per
target the JUnit XML, pytest's console output and the proxy's log; and
C{results.json} and C{report.md} with the counts and the lists.
C{--report-only} rebuilds the last two from JUnit files already there.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import attr  # noqa: E402
import yaml  # noqa: E402

from tests.support import ProxyProcess, ProxyProcessError, libpq_dsn  # noqa: E402
from twisted_pgpool.testing.localcluster import LocalCluster, LocalClusterError  # noqa: E402

#: The role the suites connect as.  Both suites create extensions, types,
#: casts and the like, so they need a superuser; C{postgres} is the
#: LocalCluster's, trusted by PostgreSQL from 127.0.0.1.
USER = "postgres"
#: Its password as the proxy knows it (a TEXT pool_passwd entry): the proxy
#: authenticates the client itself and logs in to the backends, which
#: trust C{postgres}, so its backend connections can be pooled.  Directly,
#: PostgreSQL ignores the password (trust).
PASSWORD = "postgres"

#: The targets, in the order they run; C{direct} is the reference.
TARGETS = ("direct", "single", "balanced")
PROXY_TARGETS = TARGETS[1:]

TARGET_DESCRIPTIONS = {
    "direct": "the primary directly",
    "single": "proxy, primary only, load balancing off",
    "balanced": "proxy, primary + standby, weights 1:2, read_your_writes session",
}

#: pytest outcomes as read from JUnit XML.
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "missing")


class ConformanceError(Exception):
    """
    A target could not be set up or a suite could not be run at all (as
    opposed to tests failing, which is the measurement).
    """


# -- the suites --------------------------------------------------------------


@attr.s(frozen=True, auto_attribs=True)
class Connection:
    """
    Where a suite connects: a target's address and the database made for
    this run.
    """

    host: str
    port: int
    user: str
    password: str
    database: str


@attr.s(frozen=True, auto_attribs=True)
class Suite:
    """
    How to run one library's suite.

    @ivar name: The name given on the command line.
    @ivar pytest_args: Arguments after C{python -m pytest}, before ours
        (C{--junitxml}, the cache directory, C{--timeout}).
    @ivar environment: The variables that point the suite at a target.
    @ivar safe_path: Run Python with C{-P} (no current directory on
        C{sys.path}): asyncpg's tree has an C{asyncpg/} package without its
        compiled extensions, which would shadow the installed one.
        psycopg's tree needs the opposite: its tests import C{tests.*} from
        the tree root, and its C{psycopg/} directory is a project folder,
        not the package (the installed package wins over that namespace
        directory).
    @ivar database: The database the suite expects; L{None} means a fresh
        one made for the run.  asyncpg's tests create pools on
        C{database='postgres'} and expect to see the tables that their
        main connection made, so they must run in C{postgres} (which the
        proxy never pools: a fresh cluster per target keeps runs apart
        all the same).
    """

    name: str
    pytest_args: Tuple[str, ...]
    environment: Callable[[Connection], Dict[str, str]]
    safe_path: bool = False
    database: Optional[str] = None


def _psycopg_environment(target: Connection) -> Dict[str, str]:
    return {
        "PSYCOPG_TEST_DSN": libpq_dsn(
            host=target.host,
            port=target.port,
            user=target.user,
            password=target.password,
            dbname=target.database,
        )
    }


def _asyncpg_environment(target: Connection) -> Dict[str, str]:
    # With PGHOST set, asyncpg's _testbase uses the running server
    # (RunningCluster) instead of initdb-ing its own, and connects with
    # these libpq variables.  Tests that need a cluster of their own (to
    # change pg_hba.conf, or a hot standby) cannot run against an existing
    # server and fail or skip alike on every target.
    return {
        "PGHOST": target.host,
        "PGPORT": str(target.port),
        "PGUSER": target.user,
        "PGPASSWORD": target.password,
        "PGDATABASE": target.database,
    }


SUITES: Dict[str, Suite] = {
    "psycopg": Suite(
        name="psycopg",
        # The options psycopg's own CI uses, less randomness (both runs must
        # see the same order) and less the slow tests.
        pytest_args=("-p", "no:randomly", "-m", "not slow", "tests"),
        environment=_psycopg_environment,
    ),
    "asyncpg": Suite(
        name="asyncpg",
        pytest_args=("tests",),
        environment=_asyncpg_environment,
        safe_path=True,
        database="postgres",
    ),
}


# -- the targets ---------------------------------------------------------------


def proxy_config(
    cluster: LocalCluster,
    target: str,
    num_init_children: int,
    settings: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """
    The proxy's configuration for a proxy target (C{single} or
    C{balanced}) over C{cluster}.

    @param num_init_children: Client sessions served at once.  Both suites
        open pools of connections (one asyncpg pool test up to 30) on top of
        a test's own connections; near the default of 32, later ones would
        wait in the proxy's queue, which measures the setting, not the
        protocol.
    @param settings: More settings (C{--proxy-setting}), applied last.
    """
    backends = cluster.backends_config()
    config: Dict[str, Any] = {
        "pool_passwd": "pool_passwd",
        "num_init_children": num_init_children,
    }
    if target == "single":
        config["backends"] = backends[:1]
        config["load_balance_mode"] = False
    elif target == "balanced":
        backends[0]["weight"], backends[1]["weight"] = 1, 2
        config["backends"] = backends
        config["load_balance_mode"] = True
        config["read_your_writes"] = "session"
        # The replication check (and the search for the primary) logs in
        # as the superuser, who needs no password at the backends.
        config["sr_check_user"] = USER
    else:
        raise ValueError(f"not a proxy target: {target}")
    config.update(settings or {})
    return config


@attr.s(auto_attribs=True)
class RunningTarget:
    """
    A target set up for one run of a suite: its cluster, the database made
    for the run, and the proxy in front if any.  L{stop} takes it all down.
    """

    name: str
    cluster: LocalCluster
    connection: Connection
    proxy: Optional[ProxyProcess] = None

    def stop(self) -> None:
        try:
            if self.proxy is not None:
                self.proxy.stop()
        finally:
            self.cluster.stop()


def start_target(
    target: str,
    suite: Suite,
    workdir: str,
    num_init_children: int,
    proxy_settings: Optional[Mapping[str, Any]] = None,
) -> RunningTarget:
    """
    Start a fresh cluster (with a standby for C{balanced}), make the run's
    database, start the proxy if the target has one, and check that one
    query gets through.

    @raise ConformanceError: If any of that fails; whatever started is
        stopped again.
    """
    cluster = LocalCluster(with_standby=(target == "balanced"))
    try:
        cluster.start()
    except LocalClusterError as e:
        raise ConformanceError(f"{target}: the cluster did not start: {e}") from None
    running = RunningTarget(
        name=target, cluster=cluster, connection=Connection("", 0, USER, PASSWORD, "")
    )
    try:
        database = suite.database or f"conformance_{suite.name}_{target}"
        if suite.database is None:
            cluster.psql(cluster.primary, f'CREATE DATABASE "{database}"')
        if target == "direct":
            host, port = cluster.primary.host, cluster.primary.port
        else:
            if target == "balanced":
                # The database must exist on the standby before the proxy
                # balances a session there.
                cluster.wait_for_standby()
                _wait_for_database(cluster, database)
            proxy = ProxyProcess(
                proxy_config(cluster, target, num_init_children, proxy_settings),
                workdir=os.path.join(workdir, "proxy"),
                extra_files={"pool_passwd": f"{USER}:TEXT{PASSWORD}\n"},
                start_timeout=60.0,
            )
            try:
                proxy.start()
            except ProxyProcessError as e:
                raise ConformanceError(f"{target}: the proxy did not start: {e}") from None
            running.proxy = proxy
            host, port = proxy.host, proxy.port
        running.connection = Connection(host, port, USER, PASSWORD, database)
        check_connection(cluster, running.connection)
    except BaseException:
        running.stop()
        raise
    return running


def _wait_for_database(cluster: LocalCluster, database: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    query = f"SELECT count(*) FROM pg_database WHERE datname = '{database}'"
    while cluster.psql(cluster.standby, query) != "1":
        if time.monotonic() > deadline:
            raise ConformanceError(f"the standby has no database {database} after {timeout:g}s")
        time.sleep(0.1)


def check_connection(cluster: LocalCluster, target: Connection) -> None:
    """
    One query through the target with psql, so that a target that listens
    but cannot serve fails here with psql's message instead of as a
    thousand failed tests.
    """
    assert cluster.bindir is not None
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PGPASSWORD": target.password,
        "PGPASSFILE": os.devnull,
        "PGCONNECT_TIMEOUT": "10",
    }
    result = subprocess.run(
        [
            os.path.join(cluster.bindir, "psql"),
            "-X",
            "-w",
            "-At",
            "-h",
            target.host,
            "-p",
            str(target.port),
            "-U",
            target.user,
            "-d",
            target.database,
            "-c",
            "SELECT 1",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if result.returncode != 0 or result.stdout.strip() != "1":
        raise ConformanceError(
            f"SELECT 1 through {target.host}:{target.port} failed: "
            f"{result.stdout.strip()} {result.stderr.strip()}"
        )


# -- running a suite ---------------------------------------------------------------


def suite_command(
    suite: Suite, python: str, junit: str, cache_dir: str, timeout: float, extra: Sequence[str]
) -> List[str]:
    """
    The command line running C{suite} with C{python}.

    The cache provider stays on (psycopg's conftest uses C{config.cache}),
    but writes to the run's own directory, not into the source tree.
    """
    return [
        python,
        *(("-P",) if suite.safe_path else ()),
        "-m",
        "pytest",
        *suite.pytest_args,
        f"--timeout={timeout:g}",
        f"--junitxml={junit}",
        "-o",
        f"cache_dir={cache_dir}",
        "-o",
        "junit_logging=no",
        *extra,
    ]


def suite_environment(suite: Suite, target: Connection) -> Dict[str, str]:
    """
    This process's environment without libpq's variables (a developer's
    C{PGHOST} must not redirect a run), plus the suite's own.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.pop("PSYCOPG_TEST_DSN", None)
    env.pop("PYTHONPATH", None)
    env.update(suite.environment(target))
    return env


def run_suite(
    suite: Suite,
    python: str,
    source: str,
    workdir: str,
    target: Connection,
    timeout: float,
    suite_timeout: float,
    extra: Sequence[str],
) -> Dict[str, Any]:
    """
    Run the suite once, its output to C{<workdir>/pytest.log}, and return
    how it went (exit status, seconds, whether it was stopped for taking
    longer than C{suite_timeout}).

    On the time limit the suite gets SIGINT first, on which pytest still
    writes its JUnit report of the tests run so far, and SIGKILL 60 s later.
    """
    junit = os.path.join(workdir, "junit.xml")
    if os.path.exists(junit):
        os.remove(junit)
    command = suite_command(
        suite, python, junit, os.path.join(workdir, "pytest-cache"), timeout, extra
    )
    with open(os.path.join(workdir, "command.txt"), "w", encoding="utf-8") as f:
        f.write(" ".join(command) + "\n")
        for key, value in sorted(suite.environment(target).items()):
            f.write(f"{key}={value}\n")
    started = time.monotonic()
    timed_out = False
    with open(os.path.join(workdir, "pytest.log"), "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=source,
            env=suite_environment(suite, target),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            process.wait(suite_timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    return {
        "exit_status": process.returncode,
        "seconds": round(time.monotonic() - started, 1),
        "timed_out": timed_out,
    }


# -- reading the results ---------------------------------------------------------


def _first_line(text: Optional[str], limit: int = 400) -> str:
    text = (text or "").strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _tail(text: Optional[str], lines: int = 25) -> str:
    return "\n".join((text or "").rstrip().splitlines()[-lines:])


def read_junit(path: str) -> Dict[str, Dict[str, str]]:
    """
    Read pytest's JUnit XML: test id (C{classname::name}) to its outcome
    (one of L{OUTCOMES}), its message (the first line of each failure and
    error, joined by C{" / "}) and the tail of its tracebacks.

    A test whose body failed is C{failed}, even when its tear-down then
    raised too (a hang cut off by pytest-timeout often leaves the
    connection in a state the fixture cannot clean up: the timeout is
    what matters).  A test with only a set-up or tear-down error is
    C{error}: through the proxy that still means something broke.
    """
    # A tear-down error after a failed call comes as a second <testcase>
    # of the same name: gather each test's elements first.
    cases: Dict[str, List[ElementTree.Element]] = {}
    for case in ElementTree.parse(path).iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        cases.setdefault(test_id, []).append(case)
    results: Dict[str, Dict[str, str]] = {}
    for test_id, elements in cases.items():
        failures = [f for case in elements for f in case.findall("failure")]
        errors = [e for case in elements for e in case.findall("error")]
        skipped = next((s for case in elements for s in case.findall("skipped")), None)
        if failures or errors:
            outcome = "failed" if failures else "error"
            problems = failures + errors
            message = " / ".join(
                _first_line(element.get("message")) or _first_line(_tail(element.text, 1))
                for element in problems
            )
            detail = "\n---\n".join(_tail(element.text) for element in problems)
        elif skipped is not None:
            outcome = "xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"
            message, detail = _first_line(skipped.get("message")), ""
        else:
            outcome, message, detail = "passed", "", ""
        results[test_id] = {"outcome": outcome, "message": message, "detail": detail}
    return results


def counts(results: Mapping[str, Mapping[str, str]]) -> Dict[str, int]:
    tally = {outcome: 0 for outcome in OUTCOMES}
    for result in results.values():
        tally[result["outcome"]] += 1
    tally["total"] = len(results)
    return tally


def regressions(
    direct: Mapping[str, Mapping[str, str]], proxied: Mapping[str, Mapping[str, str]]
) -> Dict[str, List[Dict[str, str]]]:
    """
    The tests that pass directly but not through the proxy: C{broken}
    (failed, error, or missing -- not run because the run stopped early),
    and C{skipped} (skipped through the proxy, e.g. because a feature
    check failed there; worth a look, not counted as failures).
    """
    broken: List[Dict[str, str]] = []
    skipped: List[Dict[str, str]] = []
    for test_id, result in sorted(direct.items()):
        if result["outcome"] != "passed":
            continue
        through = proxied.get(test_id, {"outcome": "missing", "message": "", "detail": ""})
        entry = {"test": test_id, **through}
        if through["outcome"] in ("failed", "error", "missing"):
            broken.append(entry)
        elif through["outcome"] in ("skipped", "xfailed"):
            skipped.append(entry)
    return {"broken": broken, "skipped": skipped}


_VOLATILE = [
    (re.compile(r"0x[0-9a-f]+"), "0x…"),
    (re.compile(r"\d+"), "N"),
    (re.compile(r"'[^']*'"), "'…'"),
    (re.compile(r'"[^"]*"'), '"…"'),
]


def signature(message: str) -> str:
    """
    A message with numbers, addresses and quoted names blanked, so that
    tests failing the same way group together in the report.
    """
    text = message
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text[:160]


# -- the report -------------------------------------------------------------------


def build_report(suite: str, output: str, runs: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """
    Read each target's JUnit file under C{output} and put together counts
    and the per-proxy-target lists.
    """
    results: Dict[str, Dict[str, Dict[str, str]]] = {}
    report: Dict[str, Any] = {"suite": suite, "targets": {}, "regressions": {}}
    for target in TARGETS:
        path = os.path.join(output, target, "junit.xml")
        if not os.path.exists(path):
            continue
        results[target] = read_junit(path)
        report["targets"][target] = {
            "description": TARGET_DESCRIPTIONS[target],
            "counts": counts(results[target]),
            **dict(runs.get(target, {})),
        }
    if "direct" in results:
        for target in PROXY_TARGETS:
            if target in results:
                report["regressions"][target] = regressions(results["direct"], results[target])
    return report


def markdown(report: Mapping[str, Any]) -> str:
    """
    The report as markdown: the counts table, then per proxy target the
    tests that pass directly and fail through it, grouped by message.
    """
    lines = [f"# {report['suite']}: direct vs through the proxy", ""]
    header = "| target | " + " | ".join(OUTCOMES) + " | total | seconds |"
    lines += [header, "|" + "---|" * (len(OUTCOMES) + 3)]
    for target, info in report["targets"].items():
        tally = info["counts"]
        cells = " | ".join(str(tally[outcome]) for outcome in OUTCOMES)
        seconds = info.get("seconds", "")
        note = " (stopped at the time limit)" if info.get("timed_out") else ""
        lines.append(
            f"| {target}: {info['description']} | {cells} | {tally['total']} | {seconds}{note} |"
        )
    for target, lists in report["regressions"].items():
        broken = lists["broken"]
        lines += ["", f"## Pass directly, fail through `{target}` ({len(broken)})", ""]
        groups: Dict[str, List[Dict[str, str]]] = {}
        for entry in broken:
            groups.setdefault(signature(entry["message"]) or entry["outcome"], []).append(entry)
        for key, entries in sorted(groups.items(), key=lambda item: -len(item[1])):
            lines.append(f"### {len(entries)} × `{key}`")
            lines.append("")
            for entry in entries:
                lines.append(f"- `{entry['test']}` ({entry['outcome']}): {entry['message']}")
            lines.append("")
        if lists["skipped"]:
            lines += [f"## Pass directly, skipped through `{target}` ({len(lists['skipped'])})", ""]
            for entry in lists["skipped"]:
                lines.append(f"- `{entry['test']}`: {entry['message']}")
    return "\n".join(lines) + "\n"


def print_summary(report: Mapping[str, Any], stream: Any = sys.stdout) -> None:
    for target, info in report["targets"].items():
        tally = info["counts"]
        parts = ", ".join(f"{tally[outcome]} {outcome}" for outcome in OUTCOMES if tally[outcome])
        print(f"{report['suite']} {target:8} {parts} (of {tally['total']})", file=stream)
    for target, lists in report["regressions"].items():
        print(f"\npass directly, fail through {target}: {len(lists['broken'])}", file=stream)
        for entry in lists["broken"]:
            print(f"  {entry['test']} [{entry['outcome']}] {entry['message'][:200]}", file=stream)
        if lists["skipped"]:
            print(f"pass directly, skipped through {target}: {len(lists['skipped'])}", file=stream)


def write_report(output: str, report: Mapping[str, Any]) -> None:
    with open(os.path.join(output, "results.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, sort_keys=False)
        f.write("\n")
    with open(os.path.join(output, "report.md"), "w", encoding="utf-8") as f:
        f.write(markdown(report))


# -- main ---------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run a client library's own test suite directly and through the proxy.",
    )
    parser.add_argument("suite", choices=sorted(SUITES), help="which library's suite")
    parser.add_argument("source", help="the library's source tree (holding tests/)")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the virtualenv with the library, pytest, "
        "pytest-timeout and the suite's requirements "
        "(default: this one)",
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="comma-separated subset of " + ",".join(TARGETS),
    )
    parser.add_argument(
        "--output", help="results directory (default conformance/results/<suite>, ignored by git)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per test (pytest-timeout; default 60)"
    )
    parser.add_argument(
        "--suite-timeout",
        type=float,
        default=3600.0,
        help="seconds per target for the whole suite (default 3600)",
    )
    parser.add_argument(
        "--num-init-children",
        type=int,
        default=128,
        help="the proxy's num_init_children (default 128)",
    )
    parser.add_argument(
        "--proxy-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a proxy setting for both proxy targets, VALUE in YAML "
        "(e.g. connection_cache=off); may be repeated",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rebuild results.json and report.md from the JUnit files in the output directory",
    )
    parser.epilog = "Arguments after -- go to pytest, e.g. -- -k cursor"
    argv = list(argv)
    extra: List[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = parser.parse_args(argv)
    args.pytest_extra = extra
    args.proxy_settings = {}
    for item in args.proxy_setting:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            parser.error(f"--proxy-setting wants KEY=VALUE, not {item!r}")
        args.proxy_settings[key.strip()] = yaml.safe_load(value)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    args.source = os.path.abspath(args.source)
    args.output = os.path.abspath(
        args.output or os.path.join(ROOT, "conformance", "results", args.suite)
    )
    return args


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    suite = SUITES[args.suite]
    os.makedirs(args.output, exist_ok=True)
    runs_path = os.path.join(args.output, "runs.json")
    runs: Dict[str, Any] = {}
    if os.path.exists(runs_path):
        with open(runs_path, encoding="utf-8") as f:
            runs = json.load(f)
    if not args.report_only:
        if not os.path.isdir(os.path.join(args.source, "tests")):
            print(f"{args.source} has no tests/ directory", file=sys.stderr)
            return 2
        # SIGTERM unwinds like Ctrl-C, so clusters and proxies are stopped.
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        for target in args.targets:
            workdir = os.path.join(args.output, target)
            shutil.rmtree(workdir, ignore_errors=True)
            os.makedirs(workdir)
            print(f"{suite.name} {target}: starting ({TARGET_DESCRIPTIONS[target]})", flush=True)
            try:
                running = start_target(
                    target, suite, workdir, args.num_init_children, args.proxy_settings
                )
            except ConformanceError as e:
                print(f"{suite.name} {target}: {e}", file=sys.stderr)
                return 2
            try:
                run = run_suite(
                    suite,
                    args.python,
                    args.source,
                    workdir,
                    running.connection,
                    args.timeout,
                    args.suite_timeout,
                    args.pytest_extra,
                )
            finally:
                running.stop()
            run["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            )
            runs[target] = run
            with open(runs_path, "w", encoding="utf-8") as f:
                json.dump(runs, f, indent=1)
            print(
                f"{suite.name} {target}: pytest exited {run['exit_status']} after "
                f"{run['seconds']} s{' (time limit)' if run['timed_out'] else ''}",
                flush=True,
            )
            if not os.path.exists(os.path.join(workdir, "junit.xml")):
                print(
                    f"{suite.name} {target}: no JUnit report; see {workdir}/pytest.log",
                    file=sys.stderr,
                )
    report = build_report(suite.name, args.output, runs)
    report["source"] = args.source
    write_report(args.output, report)
    print_summary(report)
    print(
        f"\nwritten: {os.path.join(args.output, 'results.json')}, "
        f"{os.path.join(args.output, 'report.md')}"
    )
    return 0


def run_main() -> int:
    try:
        return main()
    except KeyboardInterrupt:
        print("interrupted; the clusters and proxies started were stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run_main())
