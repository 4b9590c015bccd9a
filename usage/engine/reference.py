"""The catalogue a unit of work can reach, loaded from the store into DuckDB once.

Identifiers, services, their periods, subscriptions, override rates and discounts: only for the
identifier values of the file (or the services of the records being re-rated). Rate cards, their
rates, tiers, zones, bands, holidays, plans, products, allowances and tax rules: whole (the
catalogue is small beside the usage). Each DuckDB table has the store table's name and columns, so
a gate reads as it would over the store.
"""

import json

from billing.models import (
    AggregateCharge,
    Discount,
    Holiday,
    IncludedValue,
    Plan,
    Product,
    Rate,
    RateCard,
    RateTier,
    Service,
    ServiceIdentifier,
    Subscription,
    SubscriptionPeriod,
    TaxRule,
    TimeBand,
    ZonePrefix,
)
from usage.models import PeriodCounter

from .duck import empty_table, load_query, model_columns, utc, values

WHOLE = (Plan, Product, RateCard, RateTier, ZonePrefix, TimeBand, Holiday, IncludedValue, AggregateCharge, TaxRule)


def any_of(connection, column: str, sql_type: str = "bigint") -> str:
    """`column` is one of a list parameter (`list_param`, `listed`): an array literal of `sql_type`
    on PostgreSQL, a JSON array on SQLite."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s::{sql_type}[])"
    return f"{column} IN (SELECT value FROM json_each(%s))"


def list_param(connection, values) -> str:
    """`values` as one text parameter for `any_of`. One literal, not a list the driver adapts
    element by element: 200k keys took 0.5 s to adapt and PostgreSQL 0.3 s more to read as an
    ARRAY[...] expression (measured)."""
    if connection.vendor != "postgresql":
        return json.dumps(list(values))
    return "{" + ",".join(f'"{_escaped(v)}"' if isinstance(v, str) else str(int(v)) for v in values) + "}"


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# A PostgreSQL array literal's element, quoted (backslash and double quote escaped), in DuckDB.
_ELEMENT = """'"' || replace(replace(CAST(v AS VARCHAR), '\\', '\\\\'), '"', '\\"') || '"'"""


def listed(duck, connection, query: str) -> str:
    """`list_param` of the values of one-column DuckDB `query`, built by DuckDB: the values never
    pass through Python one by one."""
    if connection.vendor == "postgresql":
        select = f"SELECT '{{' || COALESCE(string_agg({_ELEMENT}, ','), '') || '}}' FROM ({query}) q(v)"
    else:
        select = f"SELECT COALESCE(CAST(to_json(list(v)) AS VARCHAR), '[]') FROM ({query}) q(v)"
    return duck.execute(select).fetchone()[0]


def load_model(duck, connection, model, where: str = "", params=()) -> int:
    columns = model_columns(model)
    fields = {f.column: f for f in model._meta.concrete_fields}
    select = ", ".join(
        utc(connection, f"t.{c}") if fields[c].get_internal_type() == "DateTimeField" else f"t.{c}" for c in columns
    )
    query = f"SELECT {select} FROM {model._meta.db_table} t" + (f" WHERE {where}" if where else "")
    return load_query(duck, connection, model._meta.db_table, columns, query, params)


def load(duck, connection, identifiers: list[str], services: list[int] = ()) -> None:
    """Load the catalogue that `identifiers` (values, at any time) and `services` (ids) can reach."""
    by_value = any_of(connection, "t.value", "text")
    load_model(duck, connection, ServiceIdentifier, by_value, [list_param(connection, identifiers)])
    reached = set(values(duck, "SELECT DISTINCT service_id FROM billing_serviceidentifier"))
    ids = sorted(reached | set(services))
    of_services = [list_param(connection, ids)]
    load_model(duck, connection, Service, any_of(connection, "t.id"), of_services)
    accounts = values(duck, "SELECT DISTINCT account_id FROM billing_service")
    load_model(duck, connection, SubscriptionPeriod, any_of(connection, "t.service_id"), of_services)
    load_model(duck, connection, Subscription, any_of(connection, "t.service_id"), of_services)
    load_model(
        duck,
        connection,
        Rate,
        f"t.rate_card_id IS NOT NULL OR {any_of(connection, 't.service_id')}",
        of_services,
    )
    load_model(
        duck,
        connection,
        Discount,
        f"{any_of(connection, 't.service_id')} OR {any_of(connection, 't.account_id')}",
        [*of_services, list_param(connection, accounts)],
    )
    for model in WHOLE:
        load_model(duck, connection, model)
    empty_table(duck, PeriodCounter._meta.db_table, model_columns(PeriodCounter))


def load_counters(duck, connection, period_ids: list[int]) -> None:
    """The period counters of `period_ids`, as they are in the store now (read inside the batch's
    transaction, after its counter locks)."""
    load_model(duck, connection, PeriodCounter, any_of(connection, "t.period_id"), [list_param(connection, period_ids)])


def add_in_flight(duck, delta: str, period_ids: list[int]) -> None:
    """Add DuckDB table `delta` (what a batch not yet committed adds: period, kind, owner, ref, total)
    to the counters `load_counters` loaded for `period_ids`."""
    table = PeriodCounter._meta.db_table
    key = ("period_id", "kind", "owner_id", "ref_id")
    columns = [
        "c.id"
        if c == "id"
        else "COALESCE(c.total, 0) + COALESCE(d.total, 0) AS total"
        if c == "total"
        else f"COALESCE(c.{c}, d.{c}) AS {c}"
        for c in model_columns(PeriodCounter)
    ]
    duck.execute(
        f"CREATE OR REPLACE TABLE {table} AS SELECT {', '.join(columns)} FROM {table} c FULL JOIN "
        f"(SELECT * FROM {delta} WHERE period_id IN (SELECT UNNEST($periods))) d "
        f"ON {' AND '.join(f'd.{k} = c.{k}' for k in key)}",
        {"periods": list(period_ids)},
    )
