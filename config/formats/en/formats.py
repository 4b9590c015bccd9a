"""The same formats for LANGUAGE_CODE "en" (see config/formats/en_AU)."""

from config.formats.en_AU.formats import *  # noqa: F403
