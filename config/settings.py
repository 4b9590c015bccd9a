"""Tollgate settings, all taken from the environment so one image serves dev, CI and production.

DATABASE_URL selects the database (default: a SQLite file in the project, the embedded mode);
DEBUG defaults to on only when no SECRET_KEY is given, so a production deploy that sets a key
gets the secure defaults that `manage.py check --deploy` asks for.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


_DEV_SECRET_KEY = "django-insecure-tollgate-development-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY", _DEV_SECRET_KEY)
DEBUG = env_bool("DEBUG", SECRET_KEY == _DEV_SECRET_KEY)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "sequences",
    "billing",
    "usage",
    "metering",
    "console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "console.middleware.RefuseNulInQuery",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'tollgate.sqlite3'}"),
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while a worker writes; a generous timeout absorbs the
    # short write locks the worker takes between batches.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so that tests can run a real worker process against the test database.
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("SQLITE_TEST_NAME", str(BASE_DIR / "test-db.sqlite3"))}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-au"
# The billing time zone: subscription periods are calendar dates in this zone.
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = ["config.formats"]

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "media"))
MEDIA_URL = "media/"

LOGIN_URL = "admin:login"

# Mediation: records per batch (one transaction each) and how long a worker's claim on a
# collector's queue lasts without renewal (a killed worker's claim lapses after it).
TOLLGATE_MEDIATION_BATCH = int(os.environ.get("TOLLGATE_MEDIATION_BATCH", "200000"))
TOLLGATE_COLLECTOR_LEASE_SECONDS = int(os.environ.get("TOLLGATE_COLLECTOR_LEASE_SECONDS", "120"))
# PostgreSQL: a file's next batch is computed while the last one is written (docs/architecture.md).
TOLLGATE_MEDIATION_OVERLAP = env_bool("TOLLGATE_MEDIATION_OVERLAP", True)
# The mediation engine's DuckDB (usage/engine): its memory limit, threads, and where what does not
# fit in memory spills (default: the system's temp directory).
TOLLGATE_DUCKDB_MEMORY_LIMIT = os.environ.get("TOLLGATE_DUCKDB_MEMORY_LIMIT", "192MB")
TOLLGATE_DUCKDB_THREADS = int(os.environ.get("TOLLGATE_DUCKDB_THREADS", "2"))
TOLLGATE_DUCKDB_TEMP_DIR = os.environ.get("TOLLGATE_DUCKDB_TEMP_DIR", "")

# Process runs: a running run not renewed within this many seconds lost its worker. Main Billing
# looks this often whether the Reprocess it waits for has finished.
TOLLGATE_RUN_LEASE_SECONDS = int(os.environ.get("TOLLGATE_RUN_LEASE_SECONDS", "3600"))
# Invoice numbers: "<series>-<8 digits>", sequential and gapless per series (django-sequences).
TOLLGATE_INVOICE_SERIES = os.environ.get("TOLLGATE_INVOICE_SERIES", "INV")
TOLLGATE_BILLING_WAIT_POLL = float(os.environ.get("TOLLGATE_BILLING_WAIT_POLL", "1.0"))

CACHES = {
    # A database cache is shared by the web process and every django-q2 worker, which the ORM
    # broker's monitoring needs; migration billing 0010 creates its table.
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "tollgate_cache",
    }
}

Q_CLUSTER = {
    "name": "tollgate",
    "orm": "default",
    "workers": int(os.environ.get("Q_WORKERS", "2")),
    # A task not acknowledged within `retry` seconds is handed out again: keep it far above
    # `timeout`, and every task idempotent.
    "timeout": int(os.environ.get("Q_TIMEOUT", "3600")),
    "retry": int(os.environ.get("Q_RETRY", "7500")),
    "max_attempts": 3,
    "catch_up": False,
    "save_limit": 250,
    "poll": 0.5,
    "sync": env_bool("Q_SYNC", False),
    "label": "Task queue (django-q2)",
}

REST_FRAMEWORK = {
    # Integration clients send a token; operators in a browser use their admin session.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "billing.api.auth.ClientTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["billing.api.permissions.RolePermission"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "billing.api.pagination.NewestFirstCursorPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "billing.api.errors.api_exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "billing.api.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["billing.api.throttling.ClientRateThrottle"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# Requests per client (token or operator session), counted in the shared cache: "N/s", "N/min",
# "N/hour" or "N/day"; empty turns the limit off. Over it: 429 with Retry-After.
TOLLGATE_API_RATE = os.environ.get("TOLLGATE_API_RATE", "3000/min")
SPECTACULAR_SETTINGS = {
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "billing.api.throttling.document_throttling",
    ],
    "TITLE": "Tollgate API",
    "DESCRIPTION": "Usage mediation, metering and rating: provisioning, usage ingest, files, usage records, "
    "quarantine, rebalance, processes and meters. Authenticate with `Authorization: Token <key>`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # System fonts: Redoc's default ones come from Google's CDN (templates/drf_spectacular/redoc.html).
    "REDOC_UI_SETTINGS": {
        "theme": {
            "typography": {
                "fontFamily": "system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif",
                "headings": {"fontFamily": "system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif"},
                "code": {"fontFamily": "ui-monospace, 'DejaVu Sans Mono', monospace"},
            }
        }
    },
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "console.models.RunStatus",
        "MediationFileStatusEnum": "usage.models.MediationFile.Status",
        "RecordStatusEnum": "usage.models.RecordFields.Status",
        "UsageRecordStageEnum": "usage.models.RecordFields.Stage",
        "UsageRecordCategoryEnum": "billing.models.Category",
        "AccountStatusEnum": "billing.models.Account.Status",
        "ServiceStatusEnum": "billing.models.Service.Status",
        "PeriodStatusEnum": "billing.models.SubscriptionPeriod.Status",
        "InvoiceStatusEnum": "billing.models.Invoice.Status",
        "ActivityStatusEnum": "console.models.ProcessActivity.Status",
    },
}
# The API takes batches of up to TOLLGATE_API_MAX_RECORDS records; a larger body is refused (413).
TOLLGATE_API_MAX_RECORDS = int(os.environ.get("TOLLGATE_API_MAX_RECORDS", "10000"))
# Files uploaded in the admin or over the API (not `manage.py receive`) up to this size; larger: 413.
TOLLGATE_MAX_UPLOAD_BYTES = int(os.environ.get("TOLLGATE_MAX_UPLOAD_BYTES", str(64 << 20)))
# What one line of a usage file may cost (usage/gates/parse.py): a longer line, number or nesting
# is that line's error. Usage times outside the years are OUT_OF_RANGE.
TOLLGATE_MAX_LINE_CHARS = int(os.environ.get("TOLLGATE_MAX_LINE_CHARS", "10000"))
TOLLGATE_MAX_NUMBER_CHARS = int(os.environ.get("TOLLGATE_MAX_NUMBER_CHARS", "40"))
TOLLGATE_MAX_JSON_DEPTH = int(os.environ.get("TOLLGATE_MAX_JSON_DEPTH", "16"))
TOLLGATE_MAX_RECORD_LINES = int(os.environ.get("TOLLGATE_MAX_RECORD_LINES", "50"))
TOLLGATE_FIRST_USAGE_YEAR = int(os.environ.get("TOLLGATE_FIRST_USAGE_YEAR", "1970"))
TOLLGATE_LAST_USAGE_YEAR = int(os.environ.get("TOLLGATE_LAST_USAGE_YEAR", "2199"))
# An Idempotency-Key whose request never finished (its worker died) is free again after this.
TOLLGATE_IDEMPOTENCY_INFLIGHT_SECONDS = int(os.environ.get("TOLLGATE_IDEMPOTENCY_INFLIGHT_SECONDS", "300"))
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("DATA_UPLOAD_MAX_MEMORY_SIZE", str(8 * 1024 * 1024)))

if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
