#!/usr/bin/env python3
"""
Measure the statement classifier: microseconds per statement, cold (a full
tokenize-and-classify, L{classify_uncached}) and warm (L{classify} with its
shape cache, each statement sent with new literal values the way pgbench's
simple protocol sends them).

Statements:

  - C{pgbench select}: C{SELECT abalance FROM pgbench_accounts WHERE aid =
    N;} (pgbench -S);
  - C{pgbench update}: the first UPDATE of pgbench's TPC-B-like script;
  - C{ORM query (2 KB)}: a Django/Hibernate-style SELECT with quoted
    identifiers, joins, many parameters-as-literals and an IN list;
  - C{multi-statement}: C{BEGIN; UPDATE ...; SELECT ...; COMMIT}.

Each figure is the best of several repeats (the least disturbed by other
processes), in microseconds per statement.  Run from the repository root::

    python benchmarks/classifier_bench.py
    python benchmarks/classifier_bench.py --quick
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import timeit
from typing import Callable, List, Tuple

import harness  # noqa: F401 - puts this checkout first on sys.path

from twisted_pgpool.sql.classifier import ClassifierConfig, classify, classify_uncached
from twisted_pgpool.sql.lexer import tokenize


def pgbench_select(rng: random.Random) -> str:
    return f"SELECT abalance FROM pgbench_accounts WHERE aid = {rng.randint(1, 1000000)};"


def pgbench_update(rng: random.Random) -> str:
    return (
        f"UPDATE pgbench_accounts SET abalance = abalance + {rng.randint(-5000, 5000)} "
        f"WHERE aid = {rng.randint(1, 1000000)};"
    )


def orm_query(rng: random.Random) -> str:
    columns = ", ".join(
        f'"app_order"."{name}"'
        for name in (
            "id",
            "created_at",
            "updated_at",
            "customer_id",
            "status",
            "total_cents",
            "currency",
            "note",
            "shipping_address_id",
            "billing_address_id",
            "coupon_code",
            "is_gift",
            "gift_message",
        )
    )
    customer_columns = ", ".join(
        f'"app_customer"."{name}"'
        for name in (
            "id",
            "email",
            "first_name",
            "last_name",
            "created_at",
            "is_active",
            "country",
            "phone",
            "date_joined",
            "last_login",
            "marketing_opt_in",
            "preferred_language",
            "loyalty_points",
            "referral_code",
            "tax_number",
            "company_name",
        )
    )
    statuses = ", ".join(
        f"'{s}'" for s in ("new", "paid", "packed", "shipped", "delivered", "returned")
    )
    ids = ", ".join(str(rng.randint(1, 10**7)) for _ in range(40))
    return (
        f"SELECT {columns}, {customer_columns}, "
        '"app_address"."id", "app_address"."line1", "app_address"."line2", "app_address"."city", '
        '"app_address"."region", "app_address"."postcode", "app_address"."country" '
        'FROM "app_order" '
        'INNER JOIN "app_customer" ON ("app_order"."customer_id" = "app_customer"."id") '
        'LEFT OUTER JOIN "app_address" ON ("app_order"."shipping_address_id" = "app_address"."id") '
        f'WHERE ("app_order"."status" IN ({statuses}) '
        f'AND "app_order"."created_at" >= \'2024-0{rng.randint(1, 9)}-01T00:00:00+00:00\'::timestamptz '
        f'AND "app_customer"."is_active" = true AND "app_customer"."country" = \'{rng.choice(["DE", "FR", "JP"])}\' '
        f'AND "app_order"."total_cents" > {rng.randint(0, 10000)} '
        f'AND "app_order"."id" IN ({ids}) '
        f'AND UPPER("app_customer"."email"::text) LIKE UPPER(\'%{rng.randint(0, 999)}@example.com\')) '
        'ORDER BY "app_order"."created_at" DESC, "app_order"."id" ASC '
        f"LIMIT {rng.randint(10, 100)} OFFSET {rng.randint(0, 1000)}"
    )


def multi_statement(rng: random.Random) -> str:
    aid = rng.randint(1, 1000000)
    return (
        f"BEGIN; UPDATE pgbench_accounts SET abalance = abalance + {rng.randint(-5000, 5000)} "
        f"WHERE aid = {aid}; SELECT abalance FROM pgbench_accounts WHERE aid = {aid}; COMMIT;"
    )


STATEMENTS: List[Tuple[str, Callable[[random.Random], str]]] = [
    ("pgbench select", pgbench_select),
    ("pgbench update", pgbench_update),
    ("ORM query (2 KB)", orm_query),
    ("multi-statement", multi_statement),
]


def best_microseconds(function: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(function, number=number, repeat=repeat)) / number * 1e6


def measure(
    make: Callable[[random.Random], str], number: int, repeat: int
) -> Tuple[int, float, float, float]:
    rng = random.Random(1)
    # Enough distinct texts that every warm call sees new literals.
    texts = [make(rng) for _ in range(number * repeat + 1)]
    sample = texts[0]

    lexer_only = best_microseconds(lambda: tokenize(sample, skip_trivia=True), number, repeat)
    cold_texts = iter(texts)
    cold = best_microseconds(lambda: classify_uncached(next(cold_texts)), number, repeat)

    config = ClassifierConfig()
    classify(sample, config)  # the first of its shape fills the cache
    warm_texts = iter(texts[1:])
    warm = best_microseconds(lambda: classify(next(warm_texts), config), number, repeat)
    return len(sample), lexer_only, cold, warm


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke test)")
    args = parser.parse_args(argv)
    number, repeat = (200, 3) if args.quick else (2000, 7)

    implementation = platform.python_implementation()
    print(
        f"{implementation} {platform.python_version()} on {platform.machine()}, best of {repeat} x {number}"
    )
    print()
    header = f"{'statement':<20} {'chars':>6} {'tokenize µs':>12} {'cold µs':>9} {'warm µs':>9}"
    print(header)
    print("-" * len(header))
    for name, make in STATEMENTS:
        size, lexer_only, cold, warm = measure(make, number, repeat)
        print(f"{name:<20} {size:>6} {lexer_only:>12.1f} {cold:>9.1f} {warm:>9.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
