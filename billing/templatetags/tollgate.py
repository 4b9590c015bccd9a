"""Template filters for people's figures; the work is in billing.formatting."""

from django import template

from billing import formatting

register = template.Library()


@register.filter
def money(amount, currency):
    """{{ x|money:"AUD" }} at the currency's decimals, {{ x|money:"AUD:4" }} at 4 (a rate card's)."""
    code, _, decimals = str(currency).partition(":")
    return formatting.money(amount, code, int(decimals) if decimals.isdigit() else None)


@register.filter
def micros(amount_micros, currency):
    return formatting.micros(amount_micros, currency)


@register.filter
def count(value):
    return formatting.number(value)


@register.filter
def duration(seconds):
    return formatting.duration(seconds)


@register.filter
def volume(octets):
    return formatting.volume(octets)


@register.filter
def quantity(value, unit):
    return formatting.quantity(value, unit)


@register.filter
def plural(n, words):
    """{{ n|plural:"completed run" }} or {{ n|plural:"entry,entries" }}."""
    singular, _, many = words.partition(",")
    return formatting.plural(int(n or 0), singular, many or None)
