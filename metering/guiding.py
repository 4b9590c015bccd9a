"""Guiding rules as SQL: one SELECT over usage records per rule, all rules of a stream in one
UNION ALL, so a stream execution reads its input once per rule, set-based."""

from .models import RECORD_FIELDS

OPERATORS = {"=", "!=", ">", ">=", "<", "<=", "in", "prefix"}


class RuleError(ValueError):
    pass


def _field(name) -> str:
    if name not in RECORD_FIELDS:
        raise RuleError(f"Unknown record field {name!r}; use one of {', '.join(RECORD_FIELDS)}.")
    return f"u.{name}"


def _condition(index: int, condition, params: list) -> str:
    if not isinstance(condition, (list, tuple)) or len(condition) != 3:
        raise RuleError(f"Condition {index}: write [field, operator, value].")
    name, op, value = condition
    column = _field(name)
    if op not in OPERATORS:
        raise RuleError(f"Condition {index}: unknown operator {op!r}; use one of {', '.join(sorted(OPERATORS))}.")
    numeric = RECORD_FIELDS[name] == "number"

    def typed(v):
        if numeric:
            try:
                return int(v)
            except (TypeError, ValueError) as exc:
                raise RuleError(f"Condition {index}: {name} is a number, not {v!r}.") from exc
        return str(v)

    if op == "in":
        if not isinstance(value, list) or not value:
            raise RuleError(f"Condition {index}: 'in' needs a non-empty list.")
        params.extend(typed(v) for v in value)
        return f"{column} IN ({', '.join(['%s'] * len(value))})"
    if op == "prefix":
        if numeric:
            raise RuleError(f"Condition {index}: 'prefix' needs a text field.")
        params.extend([str(value), str(value)])
        return f"substr({column}, 1, length(%s)) = %s"
    params.append(typed(value))
    return f"{column} {'<>' if op == '!=' else op} %s"


def key_sql(key_fields: str) -> str:
    names = [n.strip() for n in key_fields.split(",") if n.strip()]
    if not names:
        raise RuleError("The key needs at least one record field.")
    parts = [f"COALESCE(CAST({_field(n)} AS TEXT), '')" for n in names]
    return " || ':' || ".join(parts)


def value_sql(meter_type) -> str:
    """What a record contributes, as `num` (count: 1; sum, max, latest: the field) and `text`
    (unique count: the field as text)."""
    if meter_type.aggregation == "count":
        return "CAST(1 AS NUMERIC) AS num, CAST(NULL AS TEXT) AS text"
    field = _field(meter_type.field)
    if meter_type.aggregation == "unique":
        return f"CAST(NULL AS NUMERIC) AS num, CAST({field} AS TEXT) AS text"
    return f"CAST({field} AS NUMERIC) AS num, CAST(NULL AS TEXT) AS text"


def rule_sql(rule) -> tuple[str, list]:
    """(WHERE clause, params) of a rule's conditions over `u`."""
    if not isinstance(rule.conditions, list):
        raise RuleError("Conditions must be a list of [field, operator, value].")
    params: list = []
    clauses = [_condition(i, c, params) for i, c in enumerate(rule.conditions, 1)]
    key_sql(rule.key_fields)
    if rule.meter_type_id and rule.meter_type.aggregation != "count":
        _field(rule.meter_type.field)
    return (" AND ".join(clauses) or "1 = 1"), params


def guided_input(rules, low: int, high: int) -> tuple[str, list]:
    """SELECT meter_type_id, meter_key, num, text, usage_at, record_id of every (record, rule) match
    among the mediated usage records with id in (low, high]."""
    selects, params = [], []
    for rule in rules:
        where, where_params = rule_sql(rule)
        selects.append(
            f"SELECT {rule.meter_type_id} AS meter_type_id, {key_sql(rule.key_fields)} AS meter_key, "
            f"{value_sql(rule.meter_type)}, u.usage_at, u.id AS record_id FROM usage_usagerecord u "
            f"WHERE u.id > %s AND u.id <= %s AND u.status = 'mediated' AND ({where})"
        )
        params += [low, high, *where_params]
    return " UNION ALL ".join(selects), params
