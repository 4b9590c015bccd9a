"""How money and quantities are shown to people: one place, on Babel's locale data.

Stored values stay exact (micro-units, Decimal); these functions only render them. A display
figure is rounded half-up, like the one rounding point of charges (`billing.invoicing.prorate`),
so a displayed total never disagrees with what a rounded bill would say.
"""

from decimal import ROUND_HALF_UP, Decimal

from babel.numbers import format_currency, format_decimal, get_currency_precision
from django.conf import settings

from .models import UNIT_BASE_SIZE, Unit

MICROS = Decimal(1_000_000)
TIME_UNITS = {Unit.SECOND, Unit.MINUTE, Unit.HOUR}
VOLUME_UNITS = {u: Unit(u).label for u in (Unit.KB, Unit.MB, Unit.GB, Unit.KIB, Unit.MIB, Unit.GIB)}
# A volume is scaled within its unit's family; one without a unit (a record's bytes) in binary units.
DECIMAL_SCALE, BINARY_SCALE = (Unit.GB, Unit.MB, Unit.KB), (Unit.GIB, Unit.MIB, Unit.KIB)
COUNT_UNITS = {Unit.MESSAGE: ("message", "messages"), Unit.EACH: ("item", "items")}


def locale() -> str:
    return getattr(settings, "TOLLGATE_LOCALE", "en_AU")


def _decimal(value) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _fixed(value: Decimal, decimals: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def _pattern(decimals: int) -> str:
    return "#,##0" + ("." + "0" * decimals if decimals > 0 else "")


def money(amount, currency: str, decimals: int | None = None) -> str:
    """'AUD 1,234.50': the ISO 4217 code, thousands separators and `decimals` places (default:
    the currency's own, 2 for most). Per-record charges pass the rate card's decimals."""
    if amount is None:
        return ""
    currency = (currency or "").upper() or "XXX"
    if decimals is None:
        decimals = get_currency_precision(currency)
    value = _fixed(_decimal(amount), decimals)
    return format_currency(
        value, currency, format="¤¤\u00a0" + _pattern(decimals), locale=locale(), currency_digits=False
    )


def micros(amount_micros, currency: str, decimals: int | None = None) -> str:
    if amount_micros is None:
        return ""
    return money(Decimal(int(amount_micros)) / MICROS, currency, decimals)


def number(value, decimals: int = 0) -> str:
    """A count or a plain figure with thousands separators."""
    if value is None:
        return ""
    return format_decimal(_fixed(_decimal(value), decimals), format=_pattern(decimals), locale=locale())


def plural(n: int, singular: str, many: str | None = None) -> str:
    """'1 completed run', '2 completed runs', with separators."""
    return f"{number(n)} {singular if n == 1 else (many or singular + 's')}"


def duration(seconds) -> str:
    """h:mm:ss, and the milliseconds a record keeps when it has them (0:00:02.5); hours keep
    growing past 24."""
    if seconds is None:
        return ""
    exact = _fixed(_decimal(seconds), 3)
    sign, exact = ("-", -exact) if exact < 0 else ("", exact)
    whole = int(exact)
    hours, rest = divmod(whole, 3600)
    fraction = f"{exact - whole:f}"[1:].rstrip("0") if exact != whole else ""
    return f"{sign}{number(hours)}:{rest // 60:02d}:{rest % 60:02d}{fraction}"


def volume(octets, unit: str | None = None, scale=BINARY_SCALE) -> str:
    """Bytes in the unit given (kB, MB, GB, KiB, MiB, GiB), or in the largest unit of `scale` that
    keeps the figure at least 1; two decimals, as a volume is read."""
    if octets is None:
        return ""
    octets = _decimal(octets)
    if unit not in VOLUME_UNITS:
        unit = next((u for u in scale if abs(octets) >= UNIT_BASE_SIZE[u]), None)
        if unit is None:
            return f"{number(octets)} B"
    return f"{number(octets / UNIT_BASE_SIZE[unit], 2)} {VOLUME_UNITS[unit]}"


def quantity(value, unit: str | None) -> str:
    """A usage quantity held in its unit's base measure (seconds, bytes, a count), shown as a
    person reads that unit: h:mm:ss, MB or MiB (scaled within the unit's family), '12 messages'."""
    if value is None:
        return ""
    if unit in TIME_UNITS:
        return duration(value)
    if unit in VOLUME_UNITS:
        # Scaled to be read: 1,024 B charged of a MiB rate is "1.00 KiB", 1,000 B of an MB rate "1.00 kB".
        return volume(value, scale=DECIMAL_SCALE if unit in DECIMAL_SCALE else BINARY_SCALE)
    value = _decimal(value)
    places = _places(value, 3)
    if unit in COUNT_UNITS:
        singular, many = COUNT_UNITS[unit]
        return f"{number(value, places)} {singular if value == 1 else many}"
    return number(value, places)


def _places(value: Decimal, most: int) -> int:
    """The decimals `value` has (up to `most`): 2.500 has one, 60.000 none."""
    return min(max(-value.normalize().as_tuple().exponent, 0), most)


def category_quantity(value, category: str) -> str:
    """A quantity whose unit is only known by its category (telephony: seconds, data: bytes)."""
    if category == "telephony":
        return duration(value)
    if category == "data":
        return volume(value)
    return quantity(value, None)


def allowance(amount, unit: str, currency: str) -> str:
    """An allowance's size or what was drawn of it, given in its own unit (minutes, MB, money...)."""
    if amount is None:
        return ""
    if unit == "money":
        return money(amount, currency)
    return quantity(_decimal(amount) * UNIT_BASE_SIZE[unit], unit)


def aggregate_quantity(value, unit: str, currency: str) -> str:
    """An aggregate charge's metric, held in its own unit (minutes, GB, calls, money): the figure
    in that unit, up to six decimals where it has them, and the unit."""
    if value is None:
        return ""
    value = _decimal(value)
    if unit == "money":
        return money(value, currency)
    places = _places(value, 6)
    if unit in COUNT_UNITS:
        singular, many = COUNT_UNITS[unit]
        return f"{number(value, places)} {singular if value == 1 else many}"
    return f"{number(value, places)} {Unit(unit).label}"


def breakdown_line(part: dict, currency: str) -> str:
    """One step of an aggregate charge's pricing (billing.aggregates), in words and shown money."""
    amount = money(_decimal(part["amount"]), currency)
    if "tier" in part:
        how = f"rate {part['rate']}" if "rate" in part else f"at {part['price']}"
        blocks = f" in {part['blocks']} blocks" if "blocks" in part else ""
        fee = f" + flat fee {part['flat_fee']}" if "flat_fee" in part else ""
        return f"Tier {part['tier']}: {part['units']} units{blocks} {how}{fee} = {amount}"
    if "packages" in part:
        return (
            f"{part['free']} free, then {part['packages']} packages of {part['package_size']} at {part['price']} "
            f"= {amount}"
        )
    if "amount_charged" in part:
        free = f" (after {part['free_amount']} free)" if _decimal(part["free_amount"]) else ""
        return f"{part['rate']} of {part['amount_charged']}{free} = {amount}"
    if "fixed_fee" in part:
        return f"Fixed fee {part['fixed_fee']} on {part['events']} events, {part['free_events']} free = {amount}"
    if "per_event_bounds" in part:
        return f"Per-event minimum and maximum: {amount}"
    return f"{part['units']} units at {part['price']} = {amount}"
