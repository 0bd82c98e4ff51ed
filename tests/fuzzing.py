"""
A stateful, seeded mutation fuzzer of the PostgreSQL v3 frontend protocol,
run against the proxy in front of a real primary and standby.

Each I{sequence} is one client connection, made entirely from its seed
(C{"<base seed>:<index>"}), so any sequence can be replayed alone:

  1. it logs in for real, as C{app} (SCRAM-SHA-256, checked by the proxy
     against a TEXT pool_passwd entry) or C{md5user} (md5, checked against an
     md5 entry), through C{pool_hba.conf}; a few sequences spoil the login
     instead (wrong password, unknown user, garbage or a cut-off message in
     place of the password);
  2. it builds a valid script from protocol I{units}: simple queries, extended
     pipelines (Parse/Bind/Describe/Execute/Close/Sync/Flush), transactions,
     COPY FROM STDIN (simple and extended) and COPY TO STDOUT, function calls,
     big results, the proxy's own C{SHOW POOL_NODES}, a running statement
     cancelled over a separate connection, and stalls;
  3. it mutates the script: bad length words (huge, negative, short, off by a
     few bytes), bad type bytes, damaged payloads, dropped, repeated or
     swapped messages, garbage between messages, a huge announced message
     followed by megabytes of filler, the stream cut in the middle of a
     message, random TCP chunking;
  4. it decides how to end from a I{model} of how the proxy must frame what
     was sent (L{model_frame}): a stream that frames is ended with a marker
     query that must be answered (or the connection closed); a stream with an
     invalid header or a Terminate must be closed by the proxy; a stream left
     in the middle of a message is completed with filler, half-closed (the
     proxy must then close) or dropped abruptly.

"Hung" means: nothing received and no close within the hang deadline after
the last byte sent.  The proxy's output must always frame as backend
messages.

A L{Campaign} runs sequences on several worker threads, next to an
I{observer} child process (C{python -m tests.fuzzing observe}) whose probe
runs C{select 1} on a persistent connection and logs in afresh on every
tick, and whose writer inserts rows and records which COMMITs were
acknowledged.  At the end it checks what C{docs/robustness.md} lists: nodes
still attached, no traceback in the proxy's log, no hung session, no probe
or writer failure, probe latency within a bound, no acknowledged write
lost, the proxy's RSS back within a bound once the fuzz sessions are gone.

Blocking code throughout: this runs in a test's set-up or a benchmark
script, around the reactor rather than inside it.
"""

from __future__ import annotations

import json
import os
import random
import re
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence as Seq, Tuple, Union

import attr

from twisted_pgpool.auth.md5 import md5_challenge_response, md5_password_hash
from twisted_pgpool.auth.scram import ScramClient, ScramError
from twisted_pgpool.testing.processes import python_environ, rss
from twisted_pgpool.wire import messages

__all__ = [
    "Campaign",
    "CampaignResult",
    "FuzzProfile",
    "LONG_PROFILE",
    "SHORT_PROFILE",
    "make_sequence",
    "model_frame",
    "run_sequence",
]

# -- the protocol, as the fuzzer builds it ------------------------------------------

_LENGTH = struct.Struct("!I")

#: The proxy's default C{max_message_length}: the largest length word it
#: accepts after login (PostgreSQL's own limit for large messages).
DEFAULT_MAX_MESSAGE_LENGTH = 1073741823

#: Users the fuzzer logs in as: name, password, and the method the proxy's
#: pool_hba.conf makes it use.
USERS: Tuple[Tuple[str, str, str], ...] = (
    ("app", "app", "scram-sha-256"),
    ("md5user", "md5pass", "md5"),
)
DATABASE = "app"

#: Frontend message types, for type mutations that keep the framing valid.
_FRONTEND = bytes(sorted(messages.FRONTEND_TYPES))
#: Backend-only message types: valid bytes in the wrong direction.
_BACKEND_ONLY = bytes(sorted(messages.BACKEND_TYPES - messages.FRONTEND_TYPES))


def pool_hba_conf() -> str:
    """
    The proxy's client authentication file: SCRAM for C{app}, md5 for
    C{md5user}, nobody else.
    """
    return "host all app 127.0.0.1/32 scram-sha-256\nhost all md5user 127.0.0.1/32 md5\n"


def pool_passwd() -> str:
    """
    pool_passwd: a TEXT entry for C{app} (SCRAM to the client, SCRAM to the
    server) and an md5 entry for C{md5user} (md5 both ways).
    """
    return "app:TEXTapp\n" + "md5user:" + md5_password_hash("md5pass", "md5user") + "\n"


def proxy_config(backends: List[Dict[str, Any]], **settings: Any) -> Dict[str, Any]:
    """
    The fuzzed proxy's configuration: both nodes, load balancing on (the
    default), read_your_writes off (the default), pool_hba on, and the log
    at C{info} so failover lines reach the log.
    """
    config: Dict[str, Any] = {
        "backends": backends,
        "pool_passwd": "pool_passwd",
        "enable_pool_hba": True,
        "pool_hba_file": "pool_hba.conf",
        "load_balance_mode": True,
        "log_min_messages": "info",
        "num_init_children": 64,
        "max_pool": 4,
    }
    config.update(settings)
    return config


def startup_packet(user: str, database: str) -> bytes:
    return messages.encode_startup_message(
        {"user": user, "database": database, "application_name": "fuzz"}
    )


# -- the model of framing -----------------------------------------------------------


@attr.s(auto_attribs=True, frozen=True)
class Verdict:
    """
    How the proxy must frame a client stream (see L{model_frame}).

    @ivar kind: C{"framed"} (every byte belongs to a complete message of a
        valid type and length), C{"terminated"} (a Terminate comes first:
        the proxy must close), C{"invalid"} (a header with an invalid type
        or length comes first: the proxy must refuse it and close), or
        C{"incomplete"} (the stream stops inside a message: the proxy may
        wait for the rest).
    @ivar position: where the deciding header starts.
    @ivar missing: for C{"incomplete"}, bytes still to come.
    """

    kind: str
    position: int = 0
    missing: int = 0


def model_frame(
    stream: bytes,
    max_length: int = DEFAULT_MAX_MESSAGE_LENGTH,
    valid_types: FrozenSet[int] = messages.FRONTEND_TYPES,
    stop_at_terminate: bool = True,
) -> Verdict:
    """
    Frame a client's post-login stream the way the proxy must: type bytes
    from C{valid_types}, length words from 4 to C{max_length}.

    This is the fuzzer's oracle for how a session may end; it mirrors what
    PostgreSQL accepts, not how the proxy happens to be written.  It is
    lenient where PostgreSQL is strict: a header of fewer than five bytes
    is incomplete even if its type byte is already wrong (PostgreSQL
    refuses the type byte alone; the proxy may wait for the length).
    """
    pos, end = 0, len(stream)
    while pos < end:
        if end - pos < 5:
            return Verdict("incomplete", pos, 5 - (end - pos))
        message_type = stream[pos]
        (length,) = _LENGTH.unpack_from(stream, pos + 1)
        if message_type not in valid_types or length < 4 or length > max_length:
            return Verdict("invalid", pos)
        if pos + 1 + length > end:
            return Verdict("incomplete", pos, pos + 1 + length - end)
        if stop_at_terminate and message_type == messages.TERMINATE:
            return Verdict("terminated", pos)
        pos += 1 + length
    return Verdict("framed", pos)


# -- scripts ------------------------------------------------------------------------


@attr.s(auto_attribs=True)
class Part:
    """
    One element of a script's client stream: a typed message, or raw bytes
    (C{kind} L{None}).

    @ivar length: the length word to send instead of the true one.
    @ivar note: what it is, for the sequence's trace.
    """

    kind: Optional[int]
    payload: bytes
    length: Optional[int] = None
    note: str = ""

    def encode(self) -> bytes:
        if self.kind is None:
            return self.payload
        length = len(self.payload) + 4 if self.length is None else self.length
        return bytes((self.kind,)) + _LENGTH.pack(length & 0xFFFFFFFF) + self.payload

    def describe(self) -> str:
        if self.kind is None:
            return f"raw {len(self.payload)}B {self.note or _preview(self.payload)}"
        text = f"{chr(self.kind)!r} {len(self.payload)}B"
        if self.length is not None:
            text += f" length={self.length & 0xFFFFFFFF:#x}"
        return text + (f" {self.note}" if self.note else "")


@attr.s(auto_attribs=True)
class Action:
    """
    Something the client does between bytes: C{"stall"} (wait C{seconds}),
    C{"cancel"} (after C{seconds}, send a CancelRequest for this session
    over a new connection, its secret key XORed with C{key_xor}; the proxy
    must close that connection).
    """

    what: str
    seconds: float = 0.0
    key_xor: int = 0

    def describe(self) -> str:
        if self.what == "cancel":
            return f"cancel after {self.seconds:.2f}s" + (
                f" key^{self.key_xor:#x}" if self.key_xor else ""
            )
        return f"stall {self.seconds:.2f}s"


Item = Union[Part, Action]


def _preview(data: bytes, size: int = 40) -> str:
    text = repr(data[:size])
    return text + ("..." if len(data) > size else "")


def _message(encoded: bytes, note: str = "") -> Part:
    return Part(encoded[0], encoded[5:], note=note)


@attr.s(auto_attribs=True, frozen=True)
class FuzzProfile:
    """
    Sizes and rates of one kind of run.

    @ivar workers: concurrent fuzz sessions.
    @ivar sequences: how many sequences (L{None}: until C{duration}).
    @ivar duration: seconds of fuzzing at most.
    @ivar warmup: clean sequences run before the RSS baseline is taken.
    @ivar hang_deadline: seconds after the last byte sent within which the
        proxy must answer or close.
    @ivar probe_interval: seconds between the observer's probes.
    @ivar writer_interval: seconds between the writer's transactions.
    @ivar latency_bound: the largest acceptable p99 of the probe's
        C{select 1}, in seconds.
    @ivar rss_bound: the largest acceptable growth of the proxy's RSS, in
        bytes, from after the warm-up to after the fuzz sessions closed.
    @ivar max_stall: the longest stall inside a sequence.
    @ivar huge_fill: the most filler sent after a huge announced length.
    @ivar mutation_rate: the share of sequences that are mutated (the rest
        are clean and must be answered).
    """

    workers: int = 3
    sequences: Optional[int] = 200
    duration: float = 15.0
    warmup: int = 9
    hang_deadline: float = 5.0
    probe_interval: float = 0.1
    writer_interval: float = 0.05
    latency_bound: float = 0.5
    rss_bound: int = 10 * 1024 * 1024
    max_stall: float = 0.3
    huge_fill: int = 16 * 1024 * 1024
    mutation_rate: float = 0.85
    restart_on_fatal: bool = False


#: CI's run (tests/test_fuzz.py): a fixed number of sequences, small stalls,
#: and a latency bound loose enough for a shared two-core machine.
SHORT_PROFILE = FuzzProfile()

#: benchmarks/fuzz.py's default: minutes of fuzzing, one probe a second,
#: the issue's 50 ms p99 bound, the proxy restarted after a fatal finding.
LONG_PROFILE = FuzzProfile(
    workers=4,
    sequences=None,
    duration=600.0,
    warmup=20,
    hang_deadline=10.0,
    probe_interval=1.0,
    writer_interval=0.2,
    latency_bound=0.050,
    max_stall=2.0,
    restart_on_fatal=True,
)


@attr.s(auto_attribs=True)
class Tables:
    """
    The tables a campaign's sequences and writer use, unique per campaign.
    """

    tag: str

    @property
    def copy(self) -> str:
        return f"fuzz_{self.tag}_copy"

    @property
    def write(self) -> str:
        return f"fuzz_{self.tag}_write"

    @property
    def acked(self) -> str:
        return f"fuzz_{self.tag}_acked"


@attr.s(auto_attribs=True)
class Sequence:
    """
    One fuzz session, made entirely from its name.

    @ivar name: C{"<base seed>:<index>"}, the seed of everything below.
    @ivar auth_fault: how the login is spoiled, or L{None}.
    @ivar items: the client stream (bytes and actions) after login.
    @ivar ending: C{"answer"}, C{"close"}, C{"half-close"} or
        C{"disconnect"} (see L{run_sequence}).
    @ivar verdict: the model's verdict on the stream sent.
    @ivar clean: no mutation: the session must be answered.
    @ivar copy_in: the script enters COPY FROM STDIN (the ending then starts
        with CopyFail).
    @ivar trace: a readable account of the script and its mutations.
    """

    name: str
    user: str
    password: str
    auth_fault: Optional[str]
    items: List[Union[bytes, Action]]
    ending: str
    verdict: Verdict
    clean: bool
    copy_in: bool
    trace: List[str]

    @property
    def stream(self) -> bytes:
        return b"".join(item for item in self.items if isinstance(item, bytes))


# -- units: valid pieces of scripts ----------------------------------------------------


def _sql_corpus(tables: Tables) -> List[str]:
    return [
        "select 1",
        "select 'fuzz'::text, 2::int",
        "select pg_sleep(0.02)",
        f"select * from {tables.copy} limit 3",
        f"select count(*) from {tables.write}",
        f"insert into {tables.write}(v) values ('q')",
        f"update {tables.write} set v = v where v = 'none'",
        "select 1/0",
        "select * from no_such_table_fuzz",
        "set application_name = 'fuzzed'",
        "show application_name",
        "select now()",
        "select current_user, pg_is_in_recovery()",
        "listen fuzz_channel",
        "notify fuzz_channel, 'x'",
        "select generate_series(1, 50)",
        "",
    ]


def _u_simple(rng: random.Random, tables: Tables) -> List[Item]:
    sql = rng.choice(_sql_corpus(tables))
    return [_message(messages.query(sql), repr(sql))]


def _u_multi(rng: random.Random, tables: Tables) -> List[Item]:
    corpus = _sql_corpus(tables)
    sql = "; ".join(rng.choice(corpus) for _ in range(rng.randint(2, 3)))
    return [_message(messages.query(sql), repr(sql))]


def _u_extended(rng: random.Random, tables: Tables) -> List[Item]:
    items: List[Item] = []
    statements = [
        ("select $1::int + 1", [b"41"]),
        ("select $1::text || 'x'", [b"fuzz"]),
        ("select generate_series(1, 20)", []),
        (f"insert into {tables.write}(v) values ($1)", [b"e"]),
        (f"select count(*) from {tables.copy}", []),
        ("select 1/0", []),
        ("select pg_sleep(0.01)", []),
    ]
    for n in range(rng.randint(1, 3)):
        sql, params = rng.choice(statements)
        name = rng.choice(["", f"s{n}"])
        portal = rng.choice(["", f"p{n}"])
        items.append(_message(messages.parse(name, sql), f"Parse {name!r} {sql!r}"))
        items.append(_message(messages.bind(portal, name, params), f"Bind {portal!r}"))
        if rng.random() < 0.5:
            items.append(_message(messages.describe("P", portal), "Describe P"))
        items.append(_message(messages.execute(portal, rng.choice([0, 0, 0, 5])), "Execute"))
        if name and rng.random() < 0.3:
            items.append(_message(messages.close("S", name), "Close S"))
    if rng.random() < 0.2:
        items.append(_message(messages.flush(), "Flush"))
    items.append(_message(messages.sync(), "Sync"))
    return items


def _u_transaction(rng: random.Random, tables: Tables) -> List[Item]:
    items: List[Item] = [_message(messages.query("begin"), "'begin'")]
    for _ in range(rng.randint(1, 2)):
        items += rng.choice([_u_simple, _u_extended])(rng, tables)
    end = rng.choice(["commit", "rollback"])
    items.append(_message(messages.query(end), repr(end)))
    return items


def _copy_rows(rng: random.Random) -> List[Item]:
    items: List[Item] = []
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.5:
            row = b"".join(b"%d\tr%d\n" % (i, i) for i in range(rng.randint(1, 20)))
        elif choice < 0.7:
            row = rng.choice([b"x\ty\n", b"1\n", b"1\t2\t3\n", b"\\N\t\\N\n", b"\\.\n"])
        elif choice < 0.85:
            row = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
        else:
            # Big enough that a cut often lands inside it.
            row = b"7\t" + b"z" * rng.randint(20000, 200000) + b"\n"
        items.append(_message(messages.copy_data(row), "CopyData"))
    return items


def _u_copy_in(rng: random.Random, tables: Tables) -> List[Item]:
    sql = f"copy {tables.copy}(a, b) from stdin"
    items: List[Item] = [_message(messages.query(sql), repr(sql))]
    items += _copy_rows(rng)
    if rng.random() < 0.7:
        items.append(_message(messages.copy_done(), "CopyDone"))
    else:
        items.append(_message(messages.copy_fail("fuzz"), "CopyFail"))
    return items


def _u_copy_in_extended(rng: random.Random, tables: Tables) -> List[Item]:
    sql = f"copy {tables.copy}(a, b) from stdin"
    items: List[Item] = [
        _message(messages.parse("", sql), f"Parse {sql!r}"),
        _message(messages.bind("", ""), "Bind"),
        _message(messages.execute(""), "Execute"),
    ]
    items += _copy_rows(rng)
    items.append(_message(messages.copy_done(), "CopyDone"))
    items.append(_message(messages.sync(), "Sync"))
    return items


def _u_copy_out(rng: random.Random, tables: Tables) -> List[Item]:
    sql = f"copy (select generate_series(1, {rng.randint(1, 3000)})) to stdout"
    return [_message(messages.query(sql), repr(sql))]


def _u_function_call(rng: random.Random, tables: Tables) -> List[Item]:
    # int4pl (oid 177): 2 + 3, arguments and result in binary.
    encoded = messages.function_call(177, [_LENGTH.pack(2), _LENGTH.pack(3)], [1], 1)
    return [_message(encoded, "FunctionCall int4pl")]


def _u_big_result(rng: random.Random, tables: Tables) -> List[Item]:
    sql = rng.choice(["select repeat('x', 300000)", "select generate_series(1, 20000)"])
    return [_message(messages.query(sql), repr(sql))]


def _u_show(rng: random.Random, tables: Tables) -> List[Item]:
    sql = rng.choice(["SHOW POOL_NODES", "SHOW POOL_VERSION", "SHOW POOL_POOLS"])
    return [_message(messages.query(sql), repr(sql))]


def _u_cancel(rng: random.Random, tables: Tables) -> List[Item]:
    key_xor = 0 if rng.random() < 0.7 else rng.getrandbits(32) | 1
    return [
        _message(messages.query("select pg_sleep(0.3)"), "'select pg_sleep(0.3)'"),
        Action("cancel", rng.uniform(0.0, 0.15), key_xor),
    ]


def _u_pipeline_then_garbage(rng: random.Random, tables: Tables) -> List[Item]:
    # A write and a read pipelined (so the session waits for one node
    # before it may send to the other) with a bad header right behind.
    write = _message(messages.query(f"insert into {tables.write}(v) values ('g')"), "'insert'")
    read = _message(messages.query("select 1"), "'select 1'")
    pair = [write, read] if rng.random() < 0.5 else [read, write]
    bad = rng.choice([b for b in range(256) if b not in messages.FRONTEND_TYPES])
    garbage = bytes((bad,)) + _LENGTH.pack(rng.randint(0, 3)) + b"garbage"
    return pair + [Part(None, garbage, note="garbage (bad header)")]


def _u_huge_announced(rng: random.Random, tables: Tables) -> List[Item]:
    # A message announcing up to 1 GiB, and megabytes of it.
    kind = rng.choice(b"QPBSHDECF")
    return [
        Part(
            kind,
            b"F" * rng.randint(10 << 20, 16 << 20),
            length=_huge_length(rng),
            note="[huge announced message, part of its body]",
        )
    ]


def _u_copy_cut(rng: random.Random, tables: Tables) -> List[Item]:
    # COPY data announced long and cut: the session ends in the middle of
    # a message the proxy passes on as it comes.
    sql = f"copy {tables.copy}(a, b) from stdin"
    return [
        _message(messages.query(sql), repr(sql)),
        _message(messages.copy_data(b"1\tx\n"), "CopyData"),
        Part(
            messages.COPY_DATA,
            b"2\t" + b"y" * rng.randint(1000, 65536),
            length=rng.randint(1 << 20, 1 << 30),
            note="CopyData [announced long, cut]",
        ),
    ]


#: Units that are invalid or incomplete by themselves: the shapes of
#: issue 13's findings, so that short runs meet them every time.
_FAULT_UNITS: List[Tuple[Callable[[random.Random, Tables], List[Item]], float]] = [
    (_u_pipeline_then_garbage, 1.5),
    (_u_huge_announced, 1.5),
    (_u_copy_cut, 1),
]

_UNITS: List[Tuple[Callable[[random.Random, Tables], List[Item]], float]] = [
    (_u_simple, 5),
    (_u_multi, 1),
    (_u_extended, 5),
    (_u_transaction, 2),
    (_u_copy_in, 2),
    (_u_copy_in_extended, 1),
    (_u_copy_out, 1),
    (_u_function_call, 1),
    (_u_big_result, 1),
    (_u_show, 1),
    (_u_cancel, 1),
]


# -- mutations ------------------------------------------------------------------------


def _huge_length(rng: random.Random) -> int:
    return rng.choice([0x3FFFFFF0, DEFAULT_MAX_MESSAGE_LENGTH, rng.randint(10**6, 10**9)])


def _mutate_length(rng: random.Random, part: Part, profile: FuzzProfile) -> List[Part]:
    true_length = len(part.payload) + 4
    kind = rng.choice(["huge", "negative", "short", "off-by", "off-by"])
    if kind == "huge":
        part.length = _huge_length(rng)
        part.note += " [huge length]"
        if rng.random() < 0.5:
            # Megabytes of what the announced message would hold.
            fill = rng.randint(1, max(1, profile.huge_fill))
            return [part, Part(None, b"F" * fill, note=f"{fill} bytes of filler")]
    elif kind == "negative":
        part.length = rng.choice([0xFFFFFFFF, 0x80000000, 0x80000000 | rng.getrandbits(31)])
        part.note += " [negative length]"
    elif kind == "short":
        part.length = rng.randint(0, 3)
        part.note += " [short length]"
    else:
        part.length = max(0, true_length + rng.choice([-1, 1]) * rng.randint(1, 16))
        part.note += " [length off by a few]"
    return [part]


def _mutate_type(rng: random.Random, part: Part) -> None:
    choice = rng.random()
    if choice < 0.4:
        part.kind = rng.choice(_FRONTEND)
    elif choice < 0.7:
        part.kind = rng.choice(_BACKEND_ONLY)
    else:
        part.kind = rng.getrandbits(8)
    part.note += f" [type -> {chr(part.kind)!r}]"


def _mutate_payload(rng: random.Random, part: Part) -> None:
    payload = bytearray(part.payload)
    choice = rng.random()
    if choice < 0.3 and payload:
        for _ in range(rng.randint(1, 4)):
            payload[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
        part.note += " [bits flipped]"
    elif choice < 0.5 and payload:
        del payload[rng.randrange(len(payload)) :]
        part.note += " [payload cut]"
    elif choice < 0.65:
        payload += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16)))
        part.note += " [junk appended]"
    elif choice < 0.75:
        payload = bytearray(b for b in payload if b != 0)
        part.note += " [NULs removed]"
    elif len(payload) >= 2:
        # A count or length field: an int16 or int32 set to something absurd.
        at = rng.randrange(len(payload) - 1)
        value = rng.choice([0xFFFF, 0x7FFF, 0x8000, 0])
        payload[at : at + 2] = struct.pack("!H", value)
        part.note += f" [int16 at {at} -> {value:#x}]"
    part.payload = bytes(payload)


_GARBAGE = [
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    messages.encode_startup_message({"user": "app", "database": "app"}),
    messages.encode_ssl_request(),
    messages.encode_cancel_request(1, 2),
    b"\x00" * 32,
    b"Q",
    b"\xff\xff\xff\xff",
]


def _garbage(rng: random.Random) -> Part:
    if rng.random() < 0.4:
        data = rng.choice(_GARBAGE)
    else:
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
    return Part(None, data, note="garbage " + _preview(data, 24))


def _mutate(rng: random.Random, items: List[Item], profile: FuzzProfile) -> List[Item]:
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        parts = [
            i for i, item in enumerate(items) if isinstance(item, Part) and item.kind is not None
        ]
        choice = rng.random()
        if choice < 0.2 or not parts:
            items.insert(rng.randint(0, len(items)), _garbage(rng))
            continue
        at = rng.choice(parts)
        part = items[at]
        assert isinstance(part, Part)
        if choice < 0.4:
            items[at : at + 1] = _mutate_length(rng, part, profile)
        elif choice < 0.55:
            _mutate_type(rng, part)
        elif choice < 0.8:
            _mutate_payload(rng, part)
        elif choice < 0.87:
            del items[at]
        elif choice < 0.94:
            items.insert(at, attr.evolve(part, note=part.note + " [repeated]"))
        elif at + 1 < len(items):
            items[at], items[at + 1] = items[at + 1], items[at]
    return items


# -- sequences ---------------------------------------------------------------------------


_AUTH_FAULTS = ["wrong-password", "unknown-user", "garbage", "cut", "bad-sasl"]


def make_sequence(name: str, tables: Tables, profile: FuzzProfile, clean: bool = False) -> Sequence:
    """
    Build the sequence named C{name} (C{"<base seed>:<index>"}): the same
    name gives the same sequence, byte for byte.

    @param clean: no mutation, no spoiled login, ended by a marker query.
    """
    rng = random.Random(name)
    user, password, _ = rng.choice(USERS)
    mutated = not clean and rng.random() < profile.mutation_rate
    auth_fault = None
    if mutated and rng.random() < 0.06:
        auth_fault = rng.choice(_AUTH_FAULTS)
        return Sequence(
            name,
            user,
            password,
            auth_fault,
            [],
            "close",
            Verdict("framed"),
            False,
            False,
            [f"login as {user}: {auth_fault}"],
        )
    script: List[Item] = []
    units, weights = zip(*(_UNITS + (_FAULT_UNITS if mutated else [])))
    for _ in range(rng.randint(1, 5)):
        script += rng.choices(units, weights)[0](rng, tables)
        if rng.random() < 0.15:
            script.append(Action("stall", rng.uniform(0, profile.max_stall)))
    copy_in = any(
        isinstance(p, Part)
        and p.note.startswith(("'copy", "Parse 'copy"))
        and "from stdin" in p.note
        for p in script
    )
    if mutated:
        script = _mutate(rng, script, profile)
    trace = [f"login as {user}"] + [item.describe() for item in script]

    # Encode; perhaps cut the stream somewhere; perhaps chunk it.
    encoded: List[Union[bytes, Action]] = []
    for item in script:
        encoded.append(item.encode() if isinstance(item, Part) else item)
    if mutated and rng.random() < 0.25:
        total = sum(len(e) for e in encoded if isinstance(e, bytes))
        if total:
            cut = rng.randrange(total)
            trace.append(f"stream cut at byte {cut} of {total}")
            kept: List[Union[bytes, Action]] = []
            seen = 0
            for e in encoded:
                if isinstance(e, bytes):
                    if seen + len(e) > cut:
                        kept.append(e[: cut - seen])
                        break
                    seen += len(e)
                kept.append(e)
            encoded = kept
    items: List[Union[bytes, Action]] = []
    for e in encoded:
        if isinstance(e, bytes) and len(e) > 1 and rng.random() < 0.1:
            for piece in _chunks(rng, e):
                items.append(piece)
                items.append(Action("stall", rng.uniform(0, 0.01)))
        elif not isinstance(e, bytes) or e:
            items.append(e)

    sequence = Sequence(
        name, user, password, None, items, "answer", Verdict("framed"), not mutated, copy_in, trace
    )
    _choose_ending(rng, sequence, profile)
    return sequence


def _chunks(rng: random.Random, data: bytes) -> List[bytes]:
    cuts = sorted({rng.randrange(1, len(data)) for _ in range(rng.randint(1, 4))})
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


def _choose_ending(rng: random.Random, sequence: Sequence, profile: FuzzProfile) -> None:
    """
    Decide from the model how the sequence ends, completing a cut message
    with filler when that is cheap.
    """
    verdict = model_frame(sequence.stream)
    header_complete = len(sequence.stream) - verdict.position >= 5
    if (
        verdict.kind == "incomplete"
        and header_complete
        and verdict.missing <= 256 * 1024
        and rng.random() < 0.4
    ):
        sequence.items.append(b"\x00" * verdict.missing)
        sequence.trace.append(f"completed with {verdict.missing} bytes of filler")
        verdict = model_frame(sequence.stream)
    sequence.verdict = verdict
    if verdict.kind in ("invalid", "terminated"):
        sequence.ending = "close"
    elif verdict.kind == "incomplete":
        sequence.ending = rng.choice(["half-close", "disconnect"])
    elif not sequence.clean and rng.random() < 0.15:
        sequence.ending = "disconnect"
    else:
        sequence.ending = "answer"
    sequence.trace.append(
        f"model: {verdict.kind} at {verdict.position}"
        + (f", {verdict.missing} bytes missing" if verdict.missing else "")
        + f"; ending: {sequence.ending}"
    )


# -- running a sequence -----------------------------------------------------------------------


class PeerClosed(Exception):
    """
    The proxy closed the connection.
    """


class Hung(Exception):
    """
    Nothing was received and the connection was not closed within the
    deadline.
    """


class Connection:
    """
    A non-blocking client socket that always drains what the proxy sends
    while it writes (so a backpressured proxy never deadlocks the fuzzer),
    checks that what it receives frames as backend messages, and remembers
    what the session needs: the BackendKeyData, error codes, the marker.
    """

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.buffer = bytearray()
        self.closed_by_peer = False
        self.malformed: Optional[str] = None
        self.queue: Optional[List[Tuple[int, bytes]]] = []
        self.sqlstates: Counter = Counter()
        self.errors: List[str] = []
        self.key: Optional[Tuple[int, int]] = None
        self.marker: Optional[bytes] = None
        self.marker_seen = False
        self.answered = False
        self.received = 0

    def close(self, reset: bool = False) -> None:
        try:
            if reset:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.selector.close()
            self.sock.close()
        except OSError:
            pass

    # -- receiving

    def _read(self) -> bool:
        """
        Read what is there; return whether anything came (or the peer closed).
        """
        got = False
        while True:
            try:
                chunk = self.sock.recv(262144)
            except (BlockingIOError, InterruptedError):
                return got
            except OSError:
                self.closed_by_peer = True
                return True
            if not chunk:
                self.closed_by_peer = True
                return True
            got = True
            self.received += len(chunk)
            self.buffer += chunk
            self._parse()

    def _parse(self) -> None:
        buffer = self.buffer
        pos = 0
        while self.malformed is None and len(buffer) - pos >= 5:
            message_type = buffer[pos]
            (length,) = _LENGTH.unpack_from(buffer, pos + 1)
            if message_type not in messages.BACKEND_TYPES or length < 4 or length > 0x3FFFFFFF:
                self.malformed = f"bad header {bytes(buffer[pos : pos + 5])!r} at byte {pos}"
                break
            end = pos + 1 + length
            if end > len(buffer):
                break
            self._message(message_type, bytes(buffer[pos + 5 : end]))
            pos = end
        if self.malformed is not None:
            del buffer[:]
        elif pos:
            del buffer[:pos]

    def _message(self, message_type: int, payload: bytes) -> None:
        if message_type == messages.ERROR_RESPONSE:
            fields = messages.decode_error_fields(payload).fields
            self.sqlstates[fields.get("C", "?")] += 1
            if len(self.errors) < 5:
                self.errors.append(f"{fields.get('S')} {fields.get('C')} {fields.get('M')}")
        elif message_type == messages.BACKEND_KEY_DATA and len(payload) == 8:
            self.key = struct.unpack("!ii", payload)
        elif (
            message_type == messages.DATA_ROW and self.marker is not None and self.marker in payload
        ):
            self.marker_seen = True
        elif message_type == messages.READY_FOR_QUERY and self.marker_seen:
            self.answered = True
        if self.queue is not None:
            self.queue.append((message_type, payload))

    def pump(self, timeout: float) -> bool:
        """
        Wait up to C{timeout} for data; return whether any came.
        """
        if self.closed_by_peer:
            return False
        if self.selector.select(max(0.0, timeout)):
            return self._read()
        return False

    def next_message(self, deadline: float) -> Tuple[int, bytes]:
        """
        The next message (while C{queue} is on: during login).

        @raise PeerClosed: the proxy hung up first.
        @raise Hung: nothing within C{deadline} seconds.
        """
        assert self.queue is not None
        limit = time.monotonic() + deadline
        while not self.queue:
            if self.closed_by_peer:
                raise PeerClosed()
            remaining = limit - time.monotonic()
            if remaining <= 0:
                raise Hung()
            self.pump(remaining)
        return self.queue.pop(0)

    def wait(self, done: Callable[[], bool], idle: float, total: float) -> None:
        """
        Drain until C{done()} or the peer closes.

        @raise Hung: no byte for C{idle} seconds, or C{total} seconds in all.
        """
        start = last = time.monotonic()
        while not done() and not self.closed_by_peer:
            now = time.monotonic()
            if now - last >= idle or now - start >= total:
                raise Hung()
            if self.pump(min(0.5, idle - (now - last))):
                last = time.monotonic()

    # -- sending

    def send(self, data: bytes, idle: float) -> None:
        """
        Send everything, reading meanwhile.

        @raise PeerClosed: the proxy hung up.
        @raise Hung: the proxy neither read nor sent anything for C{idle}
            seconds.
        """
        view = memoryview(data)
        last = time.monotonic()
        self.selector.modify(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        try:
            while view:
                if self.closed_by_peer:
                    raise PeerClosed()
                events = self.selector.select(0.5)
                progress = False
                for _, mask in events:
                    if mask & selectors.EVENT_READ:
                        progress = self._read() or progress
                    if mask & selectors.EVENT_WRITE:
                        try:
                            sent = self.sock.send(view[:1048576])
                        except (BlockingIOError, InterruptedError):
                            sent = 0
                        except OSError:
                            self.closed_by_peer = True
                            raise PeerClosed()
                        view = view[sent:]
                        progress = progress or sent > 0
                if progress:
                    last = time.monotonic()
                elif time.monotonic() - last >= idle:
                    raise Hung()
        finally:
            if not self.closed_by_peer:
                self.selector.modify(self.sock, selectors.EVENT_READ)


@attr.s(auto_attribs=True)
class LoginResult:
    ok: bool
    detail: str = ""


def login(
    conn: Connection,
    user: str,
    password: str,
    database: str,
    deadline: float,
    fault: Optional[str] = None,
    rng: Optional[random.Random] = None,
) -> LoginResult:
    """
    Log in as a real client does, answering md5 and SCRAM-SHA-256 (or spoil
    the login as C{fault} says, after which the proxy must close).
    """
    if fault == "unknown-user":
        user = "nobody_fuzz"
    if fault == "wrong-password":
        password = password + "-wrong"
    conn.send(startup_packet(user, database), deadline)
    scram: Optional[ScramClient] = None
    while True:
        message_type, payload = conn.next_message(deadline)
        if message_type == messages.ERROR_RESPONSE:
            fields = messages.decode_error_fields(payload).fields
            return LoginResult(False, f"{fields.get('C')}: {fields.get('M')}")
        if message_type == messages.READY_FOR_QUERY:
            conn.queue = None
            return LoginResult(True)
        if message_type != messages.AUTHENTICATION:
            continue
        (code,) = struct.unpack_from("!i", payload)
        if code in (messages.AUTH_MD5_PASSWORD, messages.AUTH_SASL) and fault in ("garbage", "cut"):
            assert rng is not None
            if fault == "garbage":
                data = bytes(
                    [rng.choice([b for b in range(256) if b not in messages.FRONTEND_TYPES])]
                )
                data += bytes(rng.getrandbits(8) for _ in range(rng.randint(4, 40)))
            else:
                # A message cut short, then our side shut: the proxy sees
                # the end of the stream and must close.
                data = messages.password_message(b"x" * 100)[: rng.randint(1, 50)]
            conn.send(data, deadline)
            if fault == "cut":
                try:
                    conn.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            return LoginResult(False, "spoiled")
        if code == messages.AUTH_MD5_PASSWORD:
            answer = md5_challenge_response(md5_password_hash(password, user), payload[4:8])
            if fault == "bad-sasl":
                # Asked for md5, not SCRAM: damage the md5 answer instead
                # (the proxy must refuse it and close).
                answer = answer[:3] + bytes([answer[3] ^ 0x01]) + answer[4:]
            conn.send(messages.password_message(answer), deadline)
        elif code == messages.AUTH_SASL:
            scram = ScramClient(password=password)
            first = scram.client_first()
            mechanism = "SCRAM-SHA-256"
            if fault == "bad-sasl":
                assert rng is not None
                first = bytearray(first)
                first[rng.randrange(len(first))] ^= 0x20
                first = bytes(first)
            conn.send(messages.sasl_initial_response(mechanism, first), deadline)
        elif code == messages.AUTH_SASL_CONTINUE and scram is not None:
            try:
                final = scram.handle_server_first(payload[4:])
            except ScramError as e:
                if fault == "bad-sasl":
                    # The proxy took our damaged nonce: answer with a proof
                    # it must refuse.
                    conn.send(messages.sasl_response(b"c=biws,r=fuzz,p=AAAA"), deadline)
                return LoginResult(False, f"SCRAM: {e}")
            conn.send(messages.sasl_response(final), deadline)
        elif code == messages.AUTH_SASL_FINAL and scram is not None:
            try:
                scram.handle_server_final(payload[4:])
            except ScramError as e:
                return LoginResult(False, f"SCRAM: {e}")
        elif code != messages.AUTH_OK:
            return LoginResult(False, f"unexpected authentication request {code}")


@attr.s(auto_attribs=True)
class SessionResult:
    """
    What happened to one sequence.

    @ivar outcome: C{answered} (the marker came back), C{closed} (the proxy
        closed), C{disconnected} (we dropped it, as the script said),
        C{hang}, C{login-failed} (a clean login was refused),
        C{clean-failed} (a clean sequence was not answered), or
        C{error} (the fuzzer could not connect at all).
    @ivar problems: findings (hang, malformed output, hung cancel...).
    """

    name: str
    outcome: str
    started: float
    ended: float
    ending: str = ""
    verdict: str = ""
    sent: int = 0
    problems: List[str] = attr.Factory(list)
    sqlstates: Dict[str, int] = attr.Factory(dict)
    detail: str = ""
    errors: List[str] = attr.Factory(list)


def _cancel(
    host: str, port: int, key: Optional[Tuple[int, int]], key_xor: int, deadline: float
) -> Optional[str]:
    """
    Send a CancelRequest over a new connection; return a problem if the
    proxy neither closes it within C{deadline}.
    """
    if key is None:
        return None
    pid, secret = key
    side = Connection(host, port)
    try:
        side.send(
            messages.encode_cancel_request(
                pid, (secret ^ key_xor) & 0x7FFFFFFF if key_xor else secret
            ),
            deadline,
        )
        side.wait(lambda: False, deadline, deadline)
    except PeerClosed:
        pass
    except Hung:
        return f"cancel connection not closed within {deadline:g}s"
    finally:
        side.close()
    return None


def run_sequence(sequence: Sequence, host: str, port: int, deadline: float) -> SessionResult:
    """
    Run one sequence against the proxy at C{host}:C{port}.

    Endings: C{answer} sends (CopyFail if the script entered COPY,) Sync
    and C{ROLLBACK; SELECT '<marker>'}, and waits for the marker row and
    the ReadyForQuery after it, or a close; C{close} waits for the proxy to
    close; C{half-close} shuts our side down and waits for the proxy to
    close; C{disconnect} drops the connection (an RST half the time).
    """
    rng = random.Random(sequence.name + "/run")
    started = time.monotonic()
    result = SessionResult(sequence.name, "", started, 0.0, sequence.ending, sequence.verdict.kind)
    try:
        conn = Connection(host, port)
    except OSError as e:
        result.outcome, result.detail, result.ended = "error", f"connect: {e}", time.monotonic()
        result.problems.append(f"could not connect: {e}")
        return result
    try:
        try:
            status = login(
                conn, sequence.user, sequence.password, DATABASE, deadline, sequence.auth_fault, rng
            )
        except Hung:
            result.outcome = "hang"
            result.problems.append(f"login: no answer within {deadline:g}s")
            return result
        except PeerClosed:
            status = LoginResult(False, "closed during login")
        if sequence.auth_fault is not None:
            try:
                conn.wait(lambda: False, deadline, deadline * 3)
            except Hung:
                result.outcome = "hang"
                result.problems.append(
                    f"spoiled login ({sequence.auth_fault}) not closed within {deadline:g}s"
                )
                return result
            result.outcome = "closed"
            return result
        if not status.ok:
            result.outcome, result.detail = "login-failed", status.detail
            result.problems.append(f"clean login as {sequence.user} failed: {status.detail}")
            return result

        try:
            for item in sequence.items:
                if isinstance(item, bytes):
                    conn.send(item, deadline)
                    result.sent += len(item)
                elif item.what == "stall":
                    _drain_for(conn, item.seconds)
                else:
                    _drain_for(conn, item.seconds)
                    problem = _cancel(host, port, conn.key, item.key_xor, deadline)
                    if problem:
                        result.problems.append(problem)
            ending = sequence.ending
            if ending == "disconnect":
                result.outcome = "disconnected"
                conn.close(reset=rng.random() < 0.5)
                return result
            if ending == "half-close":
                try:
                    conn.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    # The proxy closed first (it may: the bytes were bad).
                    pass
                conn.wait(lambda: False, deadline, deadline * 3)
            elif ending == "close":
                conn.wait(lambda: False, deadline, deadline * 3)
            else:
                marker = b"fuzz-end-" + uuid.uuid4().hex.encode()
                conn.marker = marker
                tail = (
                    (messages.copy_fail("fuzz end") if sequence.copy_in else b"")
                    + messages.sync()
                    + messages.query(f"ROLLBACK; SELECT '{marker.decode()}'")
                )
                conn.send(tail, deadline)
                conn.wait(lambda: conn.answered, deadline, deadline * 6)
            result.outcome = "answered" if conn.answered else "closed"
        except PeerClosed:
            result.outcome = "closed"
        except Hung:
            result.outcome = "hang"
            result.problems.append(
                f"hung: ending {sequence.ending!r} (model: {sequence.verdict.kind}), "
                f"nothing received and no close within {deadline:g}s"
            )
        if sequence.clean and result.outcome != "answered" and result.outcome != "hang":
            result.problems.append(f"clean sequence not answered ({result.outcome})")
            result.outcome = "clean-failed"
        return result
    finally:
        if conn.malformed:
            result.problems.append(f"malformed bytes from the proxy: {conn.malformed}")
        result.sqlstates = dict(conn.sqlstates)
        result.errors = conn.errors
        result.ended = time.monotonic()
        conn.close()


def _drain_for(conn: Connection, seconds: float) -> None:
    end = time.monotonic() + seconds
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            return
        conn.pump(remaining)
        if conn.closed_by_peer:
            raise PeerClosed()


# -- the proxy from outside: its log, its nodes, its memory --------------------------------------

#: Log lines that mean a node was detached (or a detach was asked for).
FAILOVER_PATTERN = re.compile(
    r"starting degeneration|degenerate backend request|failover done|set new primary node|"
    r"failover: no primary|received detach request"
)
#: Log lines that mean the proxy hit a bug of its own.
TRACEBACK_PATTERN = re.compile(
    r"Traceback \(most recent call last\)|Unhandled [Ee]rror|internal error"
)


class LogWatcher(threading.Thread):
    """
    Follow the proxy's log file, keeping failover and traceback lines with
    the time they were seen.
    """

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.offset = 0
        self.lines: List[Tuple[float, str, str]] = []
        self.stopping = threading.Event()
        self._partial = ""

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            self.poll()
        self.poll()

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        text = self._partial + data.decode("utf-8", "replace")
        *complete, self._partial = text.split("\n")
        now = time.monotonic()
        for line in complete:
            if FAILOVER_PATTERN.search(line):
                self.lines.append((now, "failover", line))
            elif TRACEBACK_PATTERN.search(line):
                self.lines.append((now, "traceback", line))

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def show_pool_nodes(host: str, port: int, deadline: float = 10.0) -> List[Dict[str, str]]:
    """
    C{SHOW POOL_NODES} through the proxy, as C{app} or else C{md5user}:
    one dict per node.
    """
    try:
        return _show_pool_nodes(host, port, deadline, "app", "app")
    except Exception:
        return _show_pool_nodes(host, port, deadline, "md5user", "md5pass")


def _show_pool_nodes(
    host: str, port: int, deadline: float, user: str, password: str
) -> List[Dict[str, str]]:
    conn = Connection(host, port)
    try:
        status = login(conn, user, password, DATABASE, deadline)
        if not status.ok:
            raise RuntimeError(f"SHOW POOL_NODES: login failed: {status.detail}")
        conn.queue = []
        conn.send(messages.query("SHOW POOL_NODES"), deadline)
        conn.wait(
            lambda: any(t == messages.READY_FOR_QUERY for t, _ in conn.queue or []),
            deadline,
            deadline,
        )
        columns: List[str] = []
        rows = []
        for message_type, payload in conn.queue or []:
            if message_type == messages.ROW_DESCRIPTION:
                columns = [c.name for c in messages.decode_row_description(payload).columns]
            elif message_type == messages.DATA_ROW:
                values = messages.decode_data_row(payload).values
                rows.append(
                    {c: (v.decode() if v is not None else "") for c, v in zip(columns, values)}
                )
        return rows
    finally:
        conn.close()


# -- the observer: probe and writer in a child process ----------------------------------------------


def observe(
    host: str, port: int, table: str, first_id: int, probe_interval: float, writer_interval: float
) -> Dict[str, Any]:
    """
    Probe and write until a line arrives on standard input; return what was
    measured.  Runs in its own process (see L{Observer}) so the fuzzer's
    threads cannot slow its clock.
    """
    import psycopg

    stop = threading.Event()
    result: Dict[str, Any] = {
        "probe_latencies": [],
        "login_latencies": [],
        "probe_failures": [],
        "acked": [],
        "attempted": 0,
        "writer_failures": [],
        "stalled": [],
    }
    progress = {"probe": time.monotonic(), "writer": time.monotonic()}
    users = [(u, p) for u, p, _ in USERS]

    def dsn(user: str, password: str) -> str:
        return (
            f"host={host} port={port} user={user} password={password} "
            f"dbname={DATABASE} connect_timeout=5 application_name=fuzz-observer"
        )

    def probe() -> None:
        conn = None
        tick = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                if conn is None:
                    conn = psycopg.connect(dsn("app", "app"), autocommit=True)
                t = time.perf_counter()
                conn.execute("select 1").fetchone()
                result["probe_latencies"].append(time.perf_counter() - t)
            except Exception as e:
                result["probe_failures"].append([time.time(), "select 1", repr(e)])
                if conn is not None:
                    conn.close()
                conn = None
            user, password = users[tick % len(users)]
            tick += 1
            try:
                t = time.perf_counter()
                with psycopg.connect(dsn(user, password), autocommit=True) as fresh:
                    fresh.execute("select 1").fetchone()
                result["login_latencies"].append(time.perf_counter() - t)
            except Exception as e:
                result["probe_failures"].append([time.time(), f"login as {user}", repr(e)])
            progress["probe"] = time.monotonic()
            stop.wait(max(0.0, probe_interval - (time.monotonic() - started)))
        if conn is not None:
            conn.close()

    def writer() -> None:
        conn = None
        next_id = first_id
        while not stop.is_set():
            next_id += 1
            result["attempted"] += 1
            try:
                if conn is None:
                    conn = psycopg.connect(dsn("app", "app"))
                conn.execute(f"insert into {table}(id) values (%s)", (next_id,))
                conn.commit()
                result["acked"].append(next_id)
            except Exception as e:
                result["writer_failures"].append([time.time(), next_id, repr(e)])
                if conn is not None:
                    conn.close()
                conn = None
            progress["writer"] = time.monotonic()
            stop.wait(writer_interval)
        if conn is not None:
            conn.close()

    threads = [
        threading.Thread(target=probe, daemon=True),
        threading.Thread(target=writer, daemon=True),
    ]
    for t in threads:
        t.start()

    def watchdog() -> None:
        # A probe or a write that never returns is a failure too, and must
        # not keep the observer from reporting.
        reported = set()
        while not stop.wait(0.5):
            for name, last in progress.items():
                if time.monotonic() - last > 5.0 and name not in reported:
                    reported.add(name)
                    result["stalled"].append([time.time(), name])
                elif time.monotonic() - last <= 5.0:
                    reported.discard(name)

    threading.Thread(target=watchdog, daemon=True).start()
    sys.stdin.readline()
    stop.set()
    for t in threads:
        t.join(3.0)
        if t.is_alive():
            result["stalled"].append([time.time(), "did not stop"])
    return result


class Observer:
    """
    The observer child process (C{python -m tests.fuzzing observe}).
    """

    def __init__(
        self, host: str, port: int, table: str, first_id: int, profile: FuzzProfile
    ) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = python_environ(root)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fuzzing",
                "observe",
                host,
                str(port),
                table,
                str(first_id),
                str(profile.probe_interval),
                str(profile.writer_interval),
            ],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def stop(self) -> Dict[str, Any]:
        out, _ = self.process.communicate(b"stop\n", timeout=60)
        return json.loads(out.decode())


# -- campaigns ------------------------------------------------------------------------------------


def percentile(values: Seq[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@attr.s(auto_attribs=True)
class Finding:
    """
    One failed check: its kind, what was seen, and the sequences that may
    have caused it (those running when it was seen, or the one it happened
    to).
    """

    kind: str
    detail: str
    sequences: List[str] = attr.Factory(list)


@attr.s(auto_attribs=True)
class CampaignResult:
    """
    Everything a campaign measured and found; JSON-serialisable through
    L{attr.asdict}.
    """

    base_seed: int
    sequences: int = 0
    seconds: float = 0.0
    outcomes: Dict[str, int] = attr.Factory(dict)
    sqlstates: Dict[str, int] = attr.Factory(dict)
    findings: List[Finding] = attr.Factory(list)
    detaches: int = 0
    tracebacks: int = 0
    hangs: int = 0
    malformed: int = 0
    clean_failures: int = 0
    probe_count: int = 0
    probe_p50: float = float("nan")
    probe_p99: float = float("nan")
    login_p50: float = float("nan")
    login_p99: float = float("nan")
    probe_failures: int = 0
    writer_failures: int = 0
    acked_writes: int = 0
    lost_writes: int = 0
    rss_baseline: int = 0
    rss_after: int = 0
    rss_peak: int = 0
    nodes: List[Dict[str, str]] = attr.Factory(list)
    epochs: int = 0
    #: (name, started, ended, outcome, ending, model verdict) of each session.
    sessions: List[Tuple[str, float, float, str, str, str]] = attr.Factory(list)
    latency_bound: float = 0.0
    rss_bound: int = 0

    @property
    def rate(self) -> float:
        return self.sequences / self.seconds if self.seconds else 0.0

    def findings_of(self, kind: str) -> List[Finding]:
        return [f for f in self.findings if f.kind == kind]

    def to_json(self) -> Dict[str, Any]:
        data = attr.asdict(self)
        data["rate"] = self.rate
        return data

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "CampaignResult":
        data = dict(data)
        data.pop("rate", None)
        data["findings"] = [Finding(**f) for f in data["findings"]]
        return cls(**data)

    def summary(self) -> str:
        lines = [
            f"sequences {self.sequences} in {self.seconds:.1f}s ({self.rate:.1f}/s), "
            f"{self.epochs} epoch(s); outcomes {dict(sorted(self.outcomes.items()))}",
            f"detaches {self.detaches}, tracebacks {self.tracebacks}, hangs {self.hangs}, "
            f"malformed output {self.malformed}, clean sessions failed {self.clean_failures}",
            f"probe: {self.probe_count} x select 1, p50 {self.probe_p50 * 1000:.1f} ms, "
            f"p99 {self.probe_p99 * 1000:.1f} ms (bound {self.latency_bound * 1000:.0f} ms); "
            f"fresh login p50 {self.login_p50 * 1000:.1f} ms, p99 {self.login_p99 * 1000:.1f} ms; "
            f"failures {self.probe_failures}",
            f"writer: {self.acked_writes} acknowledged, {self.lost_writes} lost, "
            f"{self.writer_failures} failed",
            f"proxy RSS: {self.rss_baseline / 2**20:.1f} MiB after warm-up, "
            f"{self.rss_after / 2**20:.1f} MiB after the sessions closed "
            f"(growth {(self.rss_after - self.rss_baseline) / 2**20:+.1f} MiB, bound "
            f"{self.rss_bound / 2**20:.0f} MiB), peak {self.rss_peak / 2**20:.1f} MiB",
            f"SQLSTATEs seen: {dict(sorted(self.sqlstates.items()))}",
        ]
        for finding in self.findings:
            who = ", ".join(finding.sequences[:6]) + (" ..." if len(finding.sequences) > 6 else "")
            lines.append(
                f"FINDING {finding.kind}: {finding.detail}"
                + (f" [sequences: {who}]" if who else "")
            )
        return "\n".join(lines)


class Campaign:
    """
    A fuzz run: proxy, observer and workers over a cluster; see the module
    docstring.

    @ivar make_proxy: builds (not starts) a proxy process for a config and
        extra files; tests pass L{tests.support.ProxyProcess}.
    """

    def __init__(
        self,
        cluster: Any,
        make_proxy: Callable[..., Any],
        profile: FuzzProfile,
        base_seed: int = 1,
        log: Callable[[str], None] = lambda text: None,
        proxy_settings: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.cluster = cluster
        self.make_proxy = make_proxy
        self.profile = profile
        self.base_seed = base_seed
        self.log = log
        self.proxy_settings = proxy_settings or {}
        self.tables = Tables(uuid.uuid4().hex[:8])
        self.proxy: Any = None
        self.proxy_logs: List[str] = []

    # -- set-up

    def _direct(self) -> Any:
        import psycopg

        primary = self.cluster.primary
        return psycopg.connect(
            f"host={primary.host} port={primary.port} user=app password=app dbname=app",
            autocommit=True,
        )

    def create_tables(self) -> None:
        t = self.tables
        with self._direct() as conn:
            conn.execute(f"create table {t.copy} (a int, b text)")
            conn.execute(f"create table {t.write} (v text)")
            conn.execute(f"create table {t.acked} (id bigint primary key)")
            conn.execute(f"insert into {t.copy} select g, 'r' || g from generate_series(1, 10) g")
            for table in (t.copy, t.write, t.acked):
                conn.execute(f"grant all on {table} to md5user")
            lsn = conn.execute("select pg_current_wal_lsn()").fetchone()[0]
        standby = self.cluster.standby
        import psycopg

        deadline = time.monotonic() + 30
        with psycopg.connect(
            f"host={standby.host} port={standby.port} user=app password=app dbname=app",
            autocommit=True,
        ) as conn:
            while (
                conn.execute("select pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]
                is not True
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("the standby did not replay the fuzz tables")
                time.sleep(0.05)

    def drop_tables(self) -> None:
        t = self.tables
        with self._direct() as conn:
            for table in (t.copy, t.write, t.acked):
                conn.execute(f"drop table if exists {table}")

    def start_proxy(self) -> None:
        config = proxy_config(self.cluster.backends_config(), **self.proxy_settings)
        self.proxy = self.make_proxy(
            config, extra_files={"pool_passwd": pool_passwd(), "pool_hba.conf": pool_hba_conf()}
        )
        self.proxy.start()
        self.proxy_logs.append(self.proxy.log_path)

    # -- running

    def run(self) -> CampaignResult:
        profile = self.profile
        result = CampaignResult(
            self.base_seed, latency_bound=profile.latency_bound, rss_bound=profile.rss_bound
        )
        self.create_tables()
        try:
            index = 0
            fuzz_started = time.monotonic()
            while True:
                budget = profile.duration - (time.monotonic() - fuzz_started)
                remaining = None if profile.sequences is None else profile.sequences - index
                if budget <= 0 or remaining == 0:
                    break
                index = self._epoch(result, index, budget, remaining)
                if not profile.restart_on_fatal:
                    break
        finally:
            try:
                self.drop_tables()
            except Exception as e:  # the cluster may be gone after Ctrl-C
                self.log(f"could not drop the fuzz tables: {e}")
        return result

    def _epoch(
        self, result: CampaignResult, first_index: int, budget: float, remaining: Optional[int]
    ) -> int:
        profile = self.profile
        result.epochs += 1
        self.start_proxy()
        proxy = self.proxy
        watcher = LogWatcher(proxy.log_path)
        watcher.start()
        observer = Observer(
            proxy.host, proxy.port, self.tables.acked, result.epochs * 10**7, profile
        )
        try:
            # Warm-up: clean sequences fill the pools and the caches, so
            # the RSS baseline is that of a proxy that has served clients.
            warm_results: List[SessionResult] = []

            def warm_up(first: int) -> None:
                for n in range(first, profile.warmup, profile.workers):
                    seq = make_sequence(f"warmup:{n}", self.tables, profile, clean=True)
                    warm_results.append(
                        run_sequence(seq, proxy.host, proxy.port, profile.hang_deadline)
                    )

            warmers = [
                threading.Thread(target=warm_up, args=(n,), daemon=True)
                for n in range(profile.workers)
            ]
            for t in warmers:
                t.start()
            for t in warmers:
                t.join()
            for warm in sorted(warm_results, key=lambda r: r.name):
                if warm.outcome != "answered":
                    result.clean_failures += 1
                    result.findings.append(
                        Finding(
                            "clean-failed",
                            f"warm-up {warm.outcome}: {warm.problems} {warm.errors}",
                            [warm.name],
                        )
                    )
            time.sleep(0.5)
            baseline = rss(proxy.pid)
            peak = [baseline]
            self.log(
                f"epoch {result.epochs}: proxy pid {proxy.pid} on port {proxy.port}, "
                f"RSS after warm-up {baseline / 2**20:.1f} MiB"
            )

            lock = threading.Lock()
            counter = [first_index]
            records: List[SessionResult] = []
            stop = threading.Event()
            deadline = time.monotonic() + budget
            limit = None if remaining is None else first_index + remaining

            def worker() -> None:
                while not stop.is_set() and time.monotonic() < deadline:
                    with lock:
                        index = counter[0]
                        if limit is not None and index >= limit:
                            return
                        counter[0] += 1
                    seq = make_sequence(f"{self.base_seed}:{index}", self.tables, profile)
                    record = run_sequence(seq, proxy.host, proxy.port, profile.hang_deadline)
                    with lock:
                        records.append(record)

            started = time.monotonic()
            threads = [threading.Thread(target=worker, daemon=True) for _ in range(profile.workers)]
            for t in threads:
                t.start()
            last_report = started
            while any(t.is_alive() for t in threads):
                time.sleep(0.25)
                try:
                    peak[0] = max(peak[0], rss(proxy.pid))
                except OSError:
                    pass
                if profile.restart_on_fatal and not stop.is_set():
                    with lock:
                        login_hangs = sum(
                            1 for r in records for p in r.problems if p.startswith("login:")
                        )
                    if any(kind == "failover" for _, kind, _ in watcher.lines):
                        self.log(
                            "a node was detached: ending this epoch; the proxy will be restarted"
                        )
                        stop.set()
                    elif login_hangs >= 3:
                        self.log(
                            "logins hang (a locked-out pool?): ending this epoch; "
                            "the proxy will be restarted"
                        )
                        stop.set()
                if time.monotonic() - last_report >= 30:
                    last_report = time.monotonic()
                    with lock:
                        done = len(records)
                    self.log(
                        f"  {done} sequences, {done / (last_report - started):.1f}/s, "
                        f"RSS {peak[0] / 2**20:.1f} MiB peak"
                    )
            elapsed = time.monotonic() - started
            # The fuzz sessions are gone; let the proxy notice the last
            # hang-ups before measuring.
            time.sleep(2.0)
            samples = []
            for _ in range(3):
                time.sleep(0.2)
                samples.append(rss(proxy.pid))
            after = min(samples)
            try:
                nodes = show_pool_nodes(proxy.host, proxy.port, 3.0)
            except Exception as e:
                nodes = [{"error": repr(e)}]
        finally:
            observed = observer.stop()
            watcher.stop()
        self._judge(result, records, observed, watcher, nodes, elapsed, baseline, after, peak[0])
        result.sequences += len(records)
        proxy.stop()
        return counter[0]

    def _judge(
        self,
        result: CampaignResult,
        records: List[SessionResult],
        observed: Dict[str, Any],
        watcher: LogWatcher,
        nodes: List[Dict[str, str]],
        elapsed: float,
        baseline: int,
        after: int,
        peak: int,
    ) -> None:
        profile = self.profile
        result.seconds += elapsed
        outcomes = Counter(result.outcomes)
        sqlstates = Counter(result.sqlstates)
        for record in records:
            result.sessions.append(
                (
                    record.name,
                    record.started,
                    record.ended,
                    record.outcome,
                    record.ending,
                    record.verdict,
                )
            )
            outcomes[record.outcome] += 1
            sqlstates.update(record.sqlstates)
            for problem in record.problems:
                kind = _problem_kind(problem)
                if kind == "hang":
                    result.hangs += 1
                elif kind == "malformed-output":
                    result.malformed += 1
                else:
                    result.clean_failures += 1
                result.findings.append(Finding(kind, problem, [record.name]))
        result.outcomes, result.sqlstates = dict(outcomes), dict(sqlstates)

        def active_at(moment: float) -> List[str]:
            # Those running when the line was seen first, then those that
            # ended shortly before (the log is polled every 0.2 s).
            near = [r for r in records if r.started - 0.5 <= moment <= r.ended + 1.0]
            near.sort(
                key=lambda r: (0 if r.started <= moment <= r.ended else 1, abs(moment - r.ended))
            )
            return [r.name for r in near]

        for moment, kind, line in watcher.lines:
            if kind == "failover":
                result.detaches += 1
            else:
                result.tracebacks += 1
            result.findings.append(
                Finding(
                    "detach" if kind == "failover" else "traceback", line.strip(), active_at(moment)
                )
            )
        result.nodes = nodes
        down = [n for n in nodes if n.get("status") not in ("up", "waiting")]
        if nodes and "error" in nodes[0]:
            # Not a detach by itself: the client asking was refused.
            result.probe_failures += 1
            result.findings.append(Finding("probe-failed", f"SHOW POOL_NODES: {nodes[0]['error']}"))
        elif down:
            result.detaches += 1
            result.findings.append(Finding("detach", f"SHOW POOL_NODES after the run: {down}"))

        latencies = observed["probe_latencies"]
        result.probe_count += len(latencies)
        result.probe_p50, result.probe_p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        logins = observed["login_latencies"]
        result.login_p50, result.login_p99 = percentile(logins, 0.5), percentile(logins, 0.99)
        if latencies and result.probe_p99 > profile.latency_bound:
            result.findings.append(
                Finding(
                    "probe-latency",
                    f"probe p99 {result.probe_p99 * 1000:.1f} ms over "
                    f"{profile.latency_bound * 1000:.0f} ms",
                )
            )
        failures = observed["probe_failures"] + [
            [when, f"{name} stalled over 5 s", ""] for when, name in observed["stalled"]
        ]
        result.probe_failures += len(failures)
        for _when, what, error in failures[:20]:
            result.findings.append(Finding("probe-failed", f"{what}: {error}"))
        result.writer_failures += len(observed["writer_failures"])
        for _when, row_id, error in observed["writer_failures"][:20]:
            result.findings.append(Finding("writer-failed", f"insert {row_id}: {error}"))

        acked = set(observed["acked"])
        with self._direct() as conn:
            present = {row[0] for row in conn.execute(f"select id from {self.tables.acked}")}
        lost = sorted(acked - present)
        result.acked_writes += len(acked)
        result.lost_writes += len(lost)
        if lost:
            result.findings.append(
                Finding("lost-write", f"{len(lost)} acknowledged rows missing: {lost[:10]}")
            )

        if result.epochs == 1 or not result.rss_baseline:
            result.rss_baseline, result.rss_after = baseline, after
        if after - baseline > profile.rss_bound:
            result.findings.append(
                Finding(
                    "rss-growth",
                    f"proxy RSS grew {(after - baseline) / 2**20:.1f} MiB "
                    f"({baseline / 2**20:.1f} -> {after / 2**20:.1f} MiB)",
                )
            )
            if after - baseline > result.rss_after - result.rss_baseline:
                result.rss_baseline, result.rss_after = baseline, after
        result.rss_peak = max(result.rss_peak, peak)
        if not latencies:
            result.findings.append(Finding("probe-failed", "the probe measured nothing"))


#: Clean logins after a replayed sequence, to see whether it locked a
#: (user, database) pair out: a simple query per user, several times (the
#: pool has several connections per pair).
_AFTER_LOGIN = messages.query("select 1")


def _clean_logins(host: str, port: int, deadline: float, rounds: int = 5) -> List[str]:
    problems = []
    for user, password, _ in USERS:
        for _ in range(rounds):
            try:
                conn = Connection(host, port)
            except OSError as e:
                problems.append(f"{user}: connect: {e}")
                continue
            try:
                status = login(conn, user, password, DATABASE, deadline)
                if not status.ok:
                    problems.append(f"{user}: login refused: {status.detail}")
                    continue
                conn.queue = []
                conn.send(_AFTER_LOGIN, deadline)
                # wait() calls the lambda only before it returns, in this iteration.
                conn.wait(
                    lambda: any(t == messages.READY_FOR_QUERY for t, _ in conn.queue or []),  # noqa: B023
                    deadline,
                    deadline,
                )
                if conn.closed_by_peer:
                    problems.append(f"{user}: closed after select 1: {conn.errors}")
            except (Hung, PeerClosed) as e:
                problems.append(f"{user}: {type(e).__name__} (login or select 1)")
            finally:
                conn.close()
    return problems


@attr.s(auto_attribs=True)
class Replay:
    """
    One sequence run alone on a fresh proxy (see L{replay}).

    @ivar kinds: the finding kinds it reproduced.
    """

    name: str
    trace: List[str]
    result: SessionResult
    kinds: List[str]
    lockout: List[str]
    nodes: List[Dict[str, str]]
    log: List[str]
    log_path: str


def replay(
    name: str,
    cluster: Any,
    make_proxy: Callable[..., Any],
    profile: FuzzProfile,
    proxy_settings: Optional[Dict[str, Any]] = None,
    repeat: int = 1,
) -> Replay:
    """
    Run one sequence (C{repeat} times) alone on a fresh proxy, then clean
    logins and queries as each user, and report which findings it
    reproduced: its own result's problems, failover and traceback lines in
    the log, a node not up, a (user, database) pair locked out.
    """
    campaign = Campaign(cluster, make_proxy, profile, proxy_settings=proxy_settings)
    campaign.create_tables()
    try:
        campaign.start_proxy()
        proxy = campaign.proxy
        seq = make_sequence(name, campaign.tables, profile, clean=name.startswith("warmup:"))
        for _ in range(repeat):
            record = run_sequence(seq, proxy.host, proxy.port, profile.hang_deadline)
        time.sleep(0.5)
        lockout = _clean_logins(proxy.host, proxy.port, profile.hang_deadline)
        try:
            nodes = show_pool_nodes(proxy.host, proxy.port, profile.hang_deadline)
        except Exception as e:
            nodes = [{"error": repr(e)}]
        text = proxy.log_text()
        proxy.stop()
    finally:
        campaign.drop_tables()
    lines = text.splitlines()
    log = [
        line
        for line in lines
        if FAILOVER_PATTERN.search(line)
        or TRACEBACK_PATTERN.search(line)
        or "#error]" in line
        or "#warn]" in line
        or "Error" in line
    ]
    kinds = set()
    if any(FAILOVER_PATTERN.search(line) for line in lines) or any(
        n.get("status") not in ("up", "waiting") for n in nodes
    ):
        kinds.add("detach")
    if any(TRACEBACK_PATTERN.search(line) for line in lines):
        kinds.add("traceback")
    if lockout:
        kinds.add("lockout")
    for problem in record.problems:
        kinds.add(_problem_kind(problem))
    return Replay(name, seq.trace, record, sorted(kinds), lockout, nodes, log, proxy.log_path)


def _problem_kind(problem: str) -> str:
    if problem.startswith(("hung", "cancel", "spoiled", "login:")):
        return "hang"
    if problem.startswith("malformed"):
        return "malformed-output"
    return "clean-failed"


def main(argv: List[str]) -> int:
    if argv[:1] == ["observe"]:
        host, port, table, first_id, probe_interval, writer_interval = argv[1:7]
        result = observe(
            host, int(port), table, int(first_id), float(probe_interval), float(writer_interval)
        )
        sys.stdout.write(json.dumps(result))
        return 0
    sys.stderr.write(
        "usage: python -m tests.fuzzing observe HOST PORT TABLE FIRST_ID "
        "PROBE_INTERVAL WRITER_INTERVAL\n"
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
