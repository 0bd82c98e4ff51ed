"""
Long runs of the protocol fuzzer (tests/fuzzing.py) against the proxy in
front of a real primary and standby.

    python benchmarks/fuzz.py [--duration 600] [--workers 4] [--seed 1]
                              [--confirm] [--out DIR] [--json FILE]
    python benchmarks/fuzz.py --replay 1:1234 [--replay warmup:5 ...]

A run starts a throw-away primary+standby (tests.support.shared_cluster),
then fuzzes for --duration seconds with one probe a second (p99 of select 1
must stay within 50 ms) and a writer, and prints what docs/robustness.md
describes: sequences/s, detaches, tracebacks, hung sessions, probe
latency, lost writes, the proxy's RSS.  When a node is detached the proxy
is restarted (an "epoch" ends) so the rest of the run still finds other
things; --no-restart keeps one proxy to the end.

--confirm replays, for each distinct finding, the sequences that were
running when it was seen, each alone on a fresh proxy, until one
reproduces it: that sequence's name is the seed to report.  --replay runs
the named sequences that way and prints their traces, results and the
proxy's log lines.  The proxies' logs are kept under --out.

Exit status: 0 when nothing was found, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections import OrderedDict
from typing import Any, Dict, List

import attr
from harness import exit_on_signals

from tests import fuzzing
from tests.support import ProxyProcess, shared_cluster


def _proxies(out: str):
    counter = [0]

    def make(config: Dict[str, Any], extra_files: Dict[str, str]) -> ProxyProcess:
        counter[0] += 1
        return ProxyProcess(
            config, workdir=os.path.join(out, f"proxy-{counter[0]}"), extra_files=extra_files
        )

    return make


def _group(findings: List[fuzzing.Finding]) -> "OrderedDict[str, List[fuzzing.Finding]]":
    """
    Findings by kind and detail with timestamps, numbers and ports taken
    out: one group per distinct failure.
    """
    groups: "OrderedDict[str, List[fuzzing.Finding]]" = OrderedDict()
    for finding in findings:
        detail = re.sub(r"^\S+ \[[^\]]*\] ", "", finding.detail)
        detail = re.sub(r"0x[0-9a-f]+|\d+", "N", detail)
        groups.setdefault(f"{finding.kind}: {detail}", []).append(finding)
    return groups


def print_replay(found: fuzzing.Replay) -> None:
    print(f"--- sequence {found.name}: reproduces {found.kinds or 'nothing'}")
    for line in found.trace:
        print(f"    {line}")
    r = found.result
    print(f"  result: {r.outcome} {r.problems} errors={r.errors}")
    if found.lockout:
        print(f"  clean logins afterwards: {found.lockout[:4]}")
    print(f"  nodes: {[(n.get('node_id'), n.get('status'), n.get('role')) for n in found.nodes]}")
    for line in found.log[:25]:
        print(f"  log: {line}")
    print(f"  log file: {found.log_path}")


_REPLAYABLE = {"detach", "traceback", "hang", "clean-failed", "malformed-output", "probe-failed"}


def confirm(
    result: fuzzing.CampaignResult,
    cluster: Any,
    make: Any,
    profile: fuzzing.FuzzProfile,
    tries: int,
) -> Dict[str, Any]:
    """
    For each distinct finding, replay candidate sequences alone until one
    reproduces it.
    """
    confirmed: Dict[str, Any] = {}
    done_names: Dict[str, fuzzing.Replay] = {}
    for key, group in _group(result.findings).items():
        kind = group[0].kind
        if kind not in _REPLAYABLE:
            continue
        wanted = "lockout" if kind == "probe-failed" else kind
        candidates: List[str] = []
        for finding in group:
            for name in finding.sequences:
                if name not in candidates:
                    candidates.append(name)
        if kind == "probe-failed" or (kind == "hang" and "login:" in key):
            # A lockout: the cause is a session that left its connection
            # in the middle of a message before the first login hung.
            wanted = "lockout"
            hung = [
                s
                for s in result.sessions
                if any(
                    f.kind == "hang" and "login:" in f.detail and s[0] in f.sequences
                    for f in result.findings
                )
            ]
            first = min((s[1] for s in hung), default=float("inf"))
            candidates = [
                s[0]
                for s in sorted(result.sessions, key=lambda s: -s[2])
                if s[2] <= first and s[5] == "incomplete" and s[4] in ("disconnect", "half-close")
            ]
        for name in candidates[:tries]:
            found = done_names.get(name)
            if found is None:
                found = fuzzing.replay(name, cluster, make, profile)
                done_names[name] = found
            if wanted in found.kinds:
                confirmed[key] = found
                break
        print(
            f"{key}\n  -> "
            + (
                f"reproduced by {confirmed[key].name}"
                if key in confirmed
                else f"not reproduced alone by {candidates[:tries]}"
            )
        )
    return confirmed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=fuzzing.LONG_PROFILE.duration)
    parser.add_argument("--sequences", type=int, default=None)
    parser.add_argument("--workers", type=int, default=fuzzing.LONG_PROFILE.workers)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--short",
        action="store_true",
        help="the CI profile (tests/test_fuzz.py) instead of the long one",
    )
    parser.add_argument("--no-restart", action="store_true")
    parser.add_argument("--confirm", action="store_true")
    parser.add_argument("--confirm-tries", type=int, default=6)
    parser.add_argument("--replay", action="append", default=[], metavar="NAME")
    parser.add_argument("--repeat", type=int, default=1, help="with --replay: runs of each")
    parser.add_argument("--out", default=None, help="where the proxies' work directories go")
    parser.add_argument("--json", default=None, help="write the result as JSON here")
    args = parser.parse_args()

    profile = fuzzing.SHORT_PROFILE if args.short else fuzzing.LONG_PROFILE
    profile = attr.evolve(
        profile,
        workers=args.workers,
        duration=args.duration,
        sequences=args.sequences if args.sequences else profile.sequences if args.short else None,
        restart_on_fatal=not args.no_restart and not args.short,
    )
    out = args.out or tempfile.mkdtemp(prefix="twisted_pgpool-fuzz-")
    os.makedirs(out, exist_ok=True)
    exit_on_signals()
    cluster = shared_cluster()
    make = _proxies(out)

    if args.replay:
        found_any = False
        for name in args.replay:
            found = fuzzing.replay(name, cluster, make, profile, repeat=args.repeat)
            print_replay(found)
            found_any = found_any or bool(found.kinds)
        return 1 if found_any else 0

    print(
        f"fuzzing for {profile.duration:g}s with {profile.workers} workers, seed {args.seed}; "
        f"proxy logs under {out}",
        flush=True,
    )
    campaign = fuzzing.Campaign(
        cluster, make, profile, base_seed=args.seed, log=lambda text: print(text, flush=True)
    )
    result = campaign.run()
    print(result.summary())
    data = result.to_json()
    if args.confirm and result.findings:
        print("\nconfirming findings by replaying sequences alone:")
        confirmed = confirm(result, cluster, make, profile, args.confirm_tries)
        for key, found in confirmed.items():
            print(f"\n=== {key}")
            print_replay(found)
        data["confirmed"] = {key: attr.asdict(found) for key, found in confirmed.items()}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, default=str)
    return 1 if result.findings else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
