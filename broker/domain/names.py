"""Name rules for projects, environments and secrets: one canonical form, refused otherwise, never normalised."""

from __future__ import annotations

import re

from broker.errors import Invalid

SLUG_MAX = 64
NAME_MAX_BYTES = 256
VALUE_MAX_BYTES = 64 * 1024

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_slug(value: str, *, field: str) -> str:
    """Return the slug unchanged or raise Invalid naming the field and the rule."""
    if not isinstance(value, str) or not _SLUG.fullmatch(value) or len(value) > SLUG_MAX:
        raise Invalid(
            f"{field}: must be lower-case letters, digits and '-', starting with a letter or digit, "
            f"at most {SLUG_MAX} characters",
            field=field,
        )
    return value


def check_name(value: str, *, field: str) -> str:
    """Return the variable name unchanged or raise Invalid naming the field and the rule."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or len(value.encode()) > NAME_MAX_BYTES:
        raise Invalid(
            f"{field}: must match [A-Za-z_][A-Za-z0-9_]* (an environment variable name), "
            f"at most {NAME_MAX_BYTES} bytes",
            field=field,
        )
    return value


def check_value(value: str, *, field: str) -> bytes:
    """Return the value's UTF-8 bytes or raise Invalid; the message never contains the value."""
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{field}: must be valid Unicode text (no lone surrogates)", field=field) from None
    if len(data) > VALUE_MAX_BYTES:
        raise Invalid(f"{field}: at most {VALUE_MAX_BYTES} bytes (64 KiB) of UTF-8", field=field)
    return data


# Text a client chose (an unknown key, a mapping key) reaches an error or the audit trail only as a bounded,
# plain name; anything else is described, never shown (it may be a value pasted in, or try to inject).
_SHOWN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
NOT_SHOWN = "(a key not shown)"


def shown(part: object) -> str:
    """A location part as it may appear in an error: a list index, a name of at most 64 characters of
    [A-Za-z0-9_.-], or a description of a part that is not shown."""
    if isinstance(part, int):
        return str(part)
    if isinstance(part, str) and _SHOWN.fullmatch(part):
        return part
    return NOT_SHOWN
