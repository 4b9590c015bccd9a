"""Reads of metering that pages share."""

from django.db.models import Q

from billing.models import Account, Service

from .models import GuidingRule

# Key parts that are database ids of the catalogue, and how a person names them instead.
NAMED_PARTS = {"service_id": ("service", Service, "service_id"), "account_id": ("account", Account, "number")}


def key_fields_by_meter(meters) -> dict:
    """(stream, meter type) → the key's field names, from the stream's guiding rules."""
    pairs = {(m.stream_id, m.meter_type_id) for m in meters}
    rules = GuidingRule.objects.filter(
        stream_id__in={s for s, _ in pairs}, meter_type_id__in={t for _, t in pairs}
    ).order_by("position", "id")
    fields = {}
    for rule in rules:
        fields.setdefault((rule.stream_id, rule.meter_type_id), [n.strip() for n in rule.key_fields.split(",")])
    return fields


def label_keys(meters) -> list:
    """Give each meter (or reading) of a page `key_shown`: its key with service and account ids
    replaced by their numbers ('service TS00001'), two queries for the whole page."""
    meters = list(meters)
    fields = key_fields_by_meter(meters)
    wanted = {name: set() for name in NAMED_PARTS}
    split = []
    for meter in meters:
        names = fields.get((meter.stream_id, meter.meter_type_id), [])
        parts = meter.key.split(":")
        split.append((meter, names, parts))
        if len(names) == len(parts):
            for name, part in zip(names, parts, strict=True):
                if name in wanted and part.isdigit():
                    wanted[name].add(int(part))
    numbers = {
        name: dict(model.objects.filter(pk__in=ids).values_list("pk", field))
        for name, (_, model, field) in NAMED_PARTS.items()
        if (ids := wanted[name])
    }
    for meter, names, parts in split:
        if len(names) != len(parts):
            meter.key_shown = meter.key
            continue
        shown = []
        for name, part in zip(names, parts, strict=True):
            if name in NAMED_PARTS and part.isdigit() and int(part) in numbers.get(name, {}):
                shown.append(f"{NAMED_PARTS[name][0]} {numbers[name][int(part)]}")
            else:
                shown.append(f"{name} {part}" if part else f"{name} (empty)")
        meter.key_shown = " · ".join(shown)
    return meters


def key_filter(term: str) -> Q:
    """What an operator may type to find a meter: the key itself, or a service ID or account
    number standing for the id in any part of a key ('12:300000' is found by TS00012)."""
    term = term.strip()
    found = Q(key=term)
    ids = [str(pk) for pk in Service.objects.filter(service_id=term).values_list("pk", flat=True)]
    ids += [str(pk) for pk in Account.objects.filter(number=term).values_list("pk", flat=True)]
    for pk in ids:
        found |= Q(key=pk) | Q(key__startswith=f"{pk}:") | Q(key__endswith=f":{pk}") | Q(key__contains=f":{pk}:")
    return found
