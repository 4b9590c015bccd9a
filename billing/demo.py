"""The demo telco's numbering, shared by `seed_demo` and `make_usage_file` so a usage file for
N services names exactly the identifiers `seed_demo --services N` created."""

import datetime as dt

SERVICES_PER_ACCOUNT = 2
NBN_EVERY = 10  # every 10th service is an NBN broadband service (data only)
LATE_BILL_DAY_EVERY = 7  # every 7th account is billed from the 15th
DEMO_PASSWORD = "tollgate-demo"


API_EVERY = 8  # every 8th mobile service subscribes to API access (an aggregate charge on its calls)
# API access's graduated price of a period's calls: the first 100 free (no tier below 100), then each
# tier's calls at its price (docs/rating.md, section 8).
API_TIERS = (("100", "0.02"), ("1000", "0.01"), ("10000", "0.005"))


def has_api(i: int) -> bool:
    return not is_nbn(i) and i % API_EVERY == 0


def service_id(i: int) -> str:
    return f"SVC{i:08d}"


def sub_id(i: int) -> str:
    return f"SUB{i:08d}" if i % 3 == 0 else ""


def is_nbn(i: int) -> bool:
    return i % NBN_EVERY == 0


def identifier(i: int) -> str:
    """The identifier usage names service i by: an MSISDN, or an NBN username."""
    return f"nbn{i:08d}@demo.tollgate" if is_nbn(i) else f"614{i:08d}"


def account_index(i: int) -> int:
    return (i - 1) // SERVICES_PER_ACCOUNT + 1


def account_number(k: int) -> str:
    return f"ACC{k:07d}"


def bill_day(k: int) -> int:
    return 15 if k % LATE_BILL_DAY_EVERY == 0 else 1


def previous_month(today: dt.date) -> tuple[dt.date, dt.date]:
    last = today.replace(day=1) - dt.timedelta(days=1)
    return last.replace(day=1), last


def month_bounds(year: int, month: int) -> tuple[dt.date, dt.date]:
    first = dt.date(year, month, 1)
    last = (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    return first, last


# Destinations the standard card prices (longest prefix wins), and a prefix it does not.
DESTINATIONS = [
    ("614", "Australian mobile", 0.45),
    ("612", "Australian fixed NSW", 0.12),
    ("613", "Australian fixed VIC", 0.10),
    ("6113", "Australian 13/1300", 0.05),
    ("44", "United Kingdom", 0.08),
    ("1", "USA and Canada", 0.08),
    ("64", "New Zealand", 0.06),
    ("86", "China", 0.04),
    ("91", "India", 0.04),
]
INTERNATIONAL_PREFIXES = ("44", "1", "64", "86", "91")  # the INTL-100 bolt-on's minutes cover these
UNRATED_PREFIX = "99"  # no card has a rate for it: usage to it is quarantined NO_RATE
