"""Classify: the collector's rules map a usage type to telephony, data or misc."""

from .base import Gate

PRODUCES = ("category",)  # the record columns this gate sets


def gate(collector) -> Gate:
    rules = {k: v for k, v in (collector.category_rules or {}).items() if v in ("telephony", "data", "misc")}
    params = {"classify_default": collector.default_category}
    whens = []
    for i, (usage_type, category) in enumerate(sorted(rules.items())):
        params[f"classify_t{i}"] = usage_type
        params[f"classify_c{i}"] = category
        whens.append(f"WHEN $classify_t{i} THEN $classify_c{i}")
    expr = f"CASE s.usage_type {' '.join(whens)} ELSE $classify_default END" if whens else "$classify_default"
    return Gate(
        name="classify",
        produces=PRODUCES,
        steps=((f"{expr} AS category", ""),),
        ok="1 = 1",
        reason="''",
        message="''",
        params=params,
    )
