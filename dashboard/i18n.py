"""The dashboard's texts: one TOML file per language in ``dashboard/i18n/``, looked up by dotted key.

>>> t("severity.high", "en")
'High'
>>> t("map.zone_tip", "zh-CN", count=3)
'未处置事件：3'
"""

from __future__ import annotations

import logging
import tomllib
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

logger = logging.getLogger(__name__)

Lang = Literal["zh-CN", "en"]
LANGUAGES: tuple[Lang, ...] = get_args(Lang)
LANGUAGE_NAMES: dict[Lang, str] = {"zh-CN": "中文", "en": "English"}
LANG_KEY = "lang"
"""Session-state key of the chosen language: set by the selector in ``dashboard/app.py``, read by
every page. A plain key (the widget has its own), so it survives runs that do not draw the widget."""
_DIR = Path(__file__).resolve().parent / "i18n"
_FILES: dict[Lang, str] = {"zh-CN": "zh_CN.toml", "en": "en.toml"}


class TextsError(Exception):
    """A dashboard text file is missing, malformed, or lacks a key."""


def _flatten(prefix: str, table: dict[str, Any], out: dict[str, str]) -> None:
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            _flatten(name, value, out)
        elif isinstance(value, str):
            out[name] = value
        else:
            raise TextsError(f"text {name!r} in {_FILES}: expected a string, got {type(value).__name__}")


@cache
def texts(lang: Lang) -> dict[str, str]:
    """Every text of one language, keyed ``section.name``."""
    path = _DIR / _FILES[lang]
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TextsError(f"cannot read dashboard texts {path}: {exc}") from exc
    out: dict[str, str] = {}
    _flatten("", doc, out)
    logger.debug("texts loaded lang=%s keys=%d path=%s", lang, len(out), path)
    return out


def as_lang(value: object, default: Lang = "zh-CN") -> Lang:
    """``value`` if it names a supported language, else ``default``."""
    return value if value in LANGUAGES else default


def t(key: str, lang: Lang, **values: object) -> str:
    """The text ``key`` in ``lang``, with ``{name}`` placeholders filled from ``values``.

    Raises:
        TextsError: when the key is missing, so an untranslated string fails loudly in tests.
    """
    try:
        text = texts(lang)[key]
    except KeyError:
        raise TextsError(f"no text {key!r} for language {lang} in {_DIR / _FILES[lang]}") from None
    return text.format(**values) if values else text


def has(key: str, lang: Lang) -> bool:
    """True when ``key`` has a text in ``lang`` (for optional labels such as categories)."""
    return key in texts(lang)
