"""Verifying an OIDC workload identity token, given the issuer's JWKS: pure, no I/O, no clock of its own.

The signature is checked by joserfc; everything a broker must decide itself is here: the algorithm
allow-list (asymmetric only: never `none`, never HS* whatever the key set holds, so a public key can
never serve as an HMAC secret), the exact issuer, the audience, `exp`/`nbf`/`iat` with a small leeway, and
whether the claims match a role (exact or glob). A refusal carries a short reason for the audit trail,
never the token's text or a claim value.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

# Asymmetric algorithms only: a key set is public, so an HMAC "key" taken from it is known to everyone.
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MAX_TOKEN_BYTES = 16 * 1024
MAX_LEEWAY = 300


class Refused(Exception):
    """The token is not accepted; `reason` is safe to audit (no token text, no claim value)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownKey(Refused):
    """The token names a key id the key set does not hold (the issuer may have rotated its keys)."""


@dataclass(frozen=True)
class Verified:
    """A token whose signature, issuer, audience and times were checked."""

    issuer: str
    subject: str
    claims: Mapping[str, Any]
    jti: str | None
    expires_at: datetime


def _segment(text: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return json.loads(raw)
    except (ValueError, binascii.Error):
        raise Refused("malformed token") from None


def header_of(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, or Refused when the token is not one."""
    if len(token) > MAX_TOKEN_BYTES:
        raise Refused("token larger than 16 KiB")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise Refused("malformed token")
    header = _segment(parts[0])
    if not isinstance(header, dict):
        raise Refused("malformed token")
    return header


def _number(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise Refused(f"token has no {name} claim")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused(f"token's {name} claim is not a number")
    return float(value)


def verify(
    token: str,
    *,
    jwks: Mapping[str, Any],
    issuer: str,
    audience: str,
    algorithms: Sequence[str],
    now: datetime,
    leeway: int,
    nonce: str | None = None,
) -> Verified:
    """Check a token against the issuer's key set and settings; raise Refused (or UnknownKey) with a reason.

    With `nonce` (an ID token from a browser sign-in), the token must carry exactly that nonce, and when
    it names several audiences its `azp` must be ours (OpenID Connect Core 3.1.3.7).
    """
    allowed = [a for a in algorithms if a in ASYMMETRIC]
    header = header_of(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed:
        raise Refused(f"algorithm {str(alg)[:16]!r} is not allowed")
    keys = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kty") in ("RSA", "EC", "OKP")]
    kid = header.get("kid")
    if kid is not None and not any(k.get("kid") == kid for k in keys):
        raise UnknownKey("token names a key id the issuer's key set does not hold")
    if kid is None and len(keys) != 1:
        raise Refused("token names no key id and the key set holds several keys")
    try:
        key_set = KeySet.import_key_set({"keys": keys})
        decoded = jwt.decode(token, key_set, algorithms=allowed)
    except JoseError:
        raise Refused("bad signature or unusable key") from None
    except (ValueError, TypeError):
        raise Refused("malformed token") from None
    claims = decoded.claims
    if claims.get("iss") != issuer:
        raise Refused("wrong issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in audiences:
        raise Refused("wrong audience")
    if nonce is not None:
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
            raise Refused("nonce mismatch")
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != audience:
            raise Refused("wrong authorized party")
    leeway = max(0, min(leeway, MAX_LEEWAY))
    at = now.timestamp()
    exp = _number(claims, "exp", required=True)
    assert exp is not None
    if at >= exp + leeway:
        raise Refused("expired token")
    nbf = _number(claims, "nbf", required=False)
    if nbf is not None and at < nbf - leeway:
        raise Refused("token not yet valid")
    iat = _number(claims, "iat", required=False)
    if iat is not None and at < iat - leeway:
        raise Refused("token issued in the future")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Refused("token has no sub claim")
    jti = claims.get("jti")
    if jti is not None and not isinstance(jti, str):
        raise Refused("token's jti claim is not a string")
    return Verified(
        issuer=issuer,
        subject=sub,
        claims=claims,
        jti=jti,
        expires_at=datetime.fromtimestamp(exp, UTC),
    )


def match_claims(
    claims: Mapping[str, Any],
    bound: Mapping[str, Sequence[str]],
    *,
    glob: bool,
    lists: frozenset[str] = frozenset(),
) -> dict[str, str] | None:
    """The bound claims and the values that matched, or None when any bound claim does not match.

    Every bound claim must be present as a string (or a number or boolean, compared as its JSON text) and
    equal one of its allowed values (or, with `glob`, match one of them as a case-sensitive glob). A claim
    named in `lists` (a person's `groups`) may hold a list, and matches when one of its items does (that
    item is reported); any other claim holding a list never matches.
    """
    matched: dict[str, str] = {}
    for name, patterns in bound.items():
        value = claims.get(name)
        items = value[:_MAX_ITEMS] if name in lists and isinstance(value, list) else [value]
        found = next(
            (
                text
                for text in map(_text, items)
                if text is not None
                and any(fnmatch.fnmatchcase(text, p) if glob else text == p for p in patterns)
            ),
            None,
        )
        if found is None:
            return None
        matched[name] = found
    return matched


# The claims of a person's ID token that hold several values by nature: only these match item by item.
PERSON_LIST_CLAIMS = frozenset({"groups", "roles", "amr"})


def match_person(
    claims: Mapping[str, Any], bound: Mapping[str, Sequence[str]], *, glob: bool
) -> dict[str, str] | None:
    """Whether a person's ID token matches a console role's bound claims (as match_claims, with lists only
    in PERSON_LIST_CLAIMS); a role bound on `email` also needs `email_verified` to be the JSON boolean true,
    since a provider may let anyone type an address it never checked."""
    if "email" in bound and claims.get("email_verified") is not True:
        return None
    return match_claims(claims, bound, glob=glob, lists=PERSON_LIST_CLAIMS)


_MAX_ITEMS = 1000


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return None
