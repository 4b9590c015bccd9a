"""Time-range non-overlap rules, defined once and enforced three ways.

Rows written by COPY, bulk_create or `UPDATE ... FROM` never pass through `Model.clean()`, so
each rule lives in the database: an exclusion constraint on PostgreSQL and a pair of triggers
on SQLite. The same definition gives admin forms, services and the API their clear message
before the database has to refuse, and turns a database refusal back into that message.
"""

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.db.models import Q


@dataclass(frozen=True)
class OverlapRule:
    name: str
    table: str
    keys: tuple[str, ...]
    start: str
    end: str  # NULL means open-ended
    range_type: str  # "tstzrange" (half-open) or "daterange" (end inclusive)
    message: str
    only_when: str = ""  # a nullable column: the rule covers only rows where it is set

    @property
    def end_inclusive(self) -> bool:
        return self.range_type == "daterange"

    def postgres_sql(self) -> str:
        bounds = "'[]'" if self.end_inclusive else "'[)'"
        parts = ", ".join(f"{k} WITH =" for k in self.keys)
        where = f" WHERE ({self.only_when} IS NOT NULL)" if self.only_when else ""
        return (
            f"ALTER TABLE {self.table} ADD CONSTRAINT {self.name} EXCLUDE USING gist "
            f"({parts}, {self.range_type}({self.start}, {self.end}, {bounds}) WITH &&){where}"
        )

    def sqlite_sql(self) -> list[str]:
        cmp = ">=" if self.end_inclusive else ">"
        conditions = [f"o.{k} = NEW.{k}" for k in self.keys]
        conditions += [
            f"(o.{self.end} IS NULL OR o.{self.end} {cmp} NEW.{self.start})",
            f"(NEW.{self.end} IS NULL OR NEW.{self.end} {cmp} o.{self.start})",
        ]
        if self.only_when:
            conditions += [f"o.{self.only_when} IS NOT NULL", f"NEW.{self.only_when} IS NOT NULL"]
        msg = f"{self.name}: {self.message}".replace("'", "''")
        statements = []
        for event, extra in (("INSERT", []), ("UPDATE", ["o.id <> NEW.id"])):
            where = " AND ".join(conditions + extra)
            statements.append(
                f"CREATE TRIGGER {self.name}_{event.lower()} BEFORE {event} ON {self.table} "
                f"WHEN EXISTS (SELECT 1 FROM {self.table} o WHERE {where}) "
                f"BEGIN SELECT RAISE(ABORT, '{msg}'); END"
            )
        return statements

    def drop_sql(self, vendor: str) -> list[str]:
        if vendor == "postgresql":
            return [f"ALTER TABLE {self.table} DROP CONSTRAINT IF EXISTS {self.name}"]
        return [f"DROP TRIGGER IF EXISTS {self.name}_{e}" for e in ("insert", "update")]

    def overlapping(self, queryset, instance):
        """Rows of `queryset` that `instance` would overlap under this rule."""
        start = getattr(instance, self.start)
        end = getattr(instance, self.end)
        if start is None or (self.only_when and getattr(instance, self.only_when) is None):
            return queryset.none()
        qs = queryset.filter(**{k: getattr(instance, k) for k in self.keys})
        if self.only_when:
            qs = qs.filter(**{f"{self.only_when}__isnull": False})
        after = "gte" if self.end_inclusive else "gt"
        qs = qs.filter(Q(**{f"{self.end}__isnull": True}) | Q(**{f"{self.end}__{after}": start}))
        if end is not None:
            qs = qs.filter(**{f"{self.start}__{'lte' if self.end_inclusive else 'lt'}": end})
        if instance.pk:
            qs = qs.exclude(pk=instance.pk)
        return qs

    def validate(self, instance) -> None:
        clash = self.overlapping(type(instance)._default_manager.all(), instance).first()
        if clash is not None:
            raise ValidationError(f"{self.message} Conflicts with {clash}.", code=self.name)


RULES: dict[str, OverlapRule] = {}


def register(rule: OverlapRule) -> OverlapRule:
    RULES[rule.name] = rule
    return rule


IDENTIFIER_OVERLAP = register(
    OverlapRule(
        name="billing_identifier_no_overlap",
        table="billing_serviceidentifier",
        keys=("value",),
        start="active_from",
        end="active_to",
        range_type="tstzrange",
        message="This identifier value is already active on a service during that time.",
    )
)


PLAN_OVERLAP = register(
    OverlapRule(
        name="billing_subscription_one_plan",
        table="billing_subscription",
        keys=("service_id",),
        start="starts_on",
        end="ends_on",
        range_type="daterange",
        only_when="plan_id",
        message="The service already has a plan for part of that time.",
    )
)


PERIOD_OVERLAP = register(
    OverlapRule(
        name="billing_period_no_overlap",
        table="billing_subscriptionperiod",
        keys=("service_id",),
        start="start_date",
        end="end_date",
        range_type="daterange",
        message="The service already has a subscription period covering part of those dates.",
    )
)


def message_for_integrity_error(exc: IntegrityError) -> str | None:
    """The clear message of the rule behind a database refusal, if one of ours refused.

    PostgreSQL names the exclusion constraint in its error text; the SQLite triggers raise
    with the rule name as the message's prefix.
    """
    text = str(exc)
    for rule in RULES.values():
        if rule.name in text:
            return rule.message
    return None


def install(schema_editor, names: list[str]) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    for name in names:
        rule = RULES[name]
        if vendor == "postgresql":
            schema_editor.execute(rule.postgres_sql())
        elif vendor == "sqlite":
            for sql in rule.sqlite_sql():
                schema_editor.execute(sql)


def reinstall_sqlite_triggers(schema_editor, names: list[str]) -> None:
    """SQLite rebuilds a table to add a column or constraint and its triggers go with the old one:
    a migration that alters a table with a rule puts the rule's triggers back."""
    if schema_editor.connection.vendor != "sqlite":
        return
    uninstall(schema_editor, names)
    install(schema_editor, names)


def uninstall(schema_editor, names: list[str]) -> None:
    for name in names:
        for sql in RULES[name].drop_sql(schema_editor.connection.vendor):
            schema_editor.execute(sql)
