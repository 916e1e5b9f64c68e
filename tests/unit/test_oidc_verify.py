"""broker/domain/oidc.py is pure: verification given a key set, and claim matching, with no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from broker.domain.oidc import Refused, UnknownKey, header_of, match_claims, match_person, verify

NOW = datetime(2030, 1, 1, tzinfo=UTC)
KEY = ECKey.generate_key("P-256", parameters={"kid": "k"})
JWKS = {"keys": [KEY.as_dict(private=False)]}


def _token(**over: object) -> str:
    at = int(NOW.timestamp())
    claims = {"iss": "https://i.test", "aud": ["a", "b"], "sub": "s", "exp": at + 60, **over}
    return jwt.encode({"alg": "ES256", "kid": "k"}, {k: v for k, v in claims.items() if v is not None}, KEY)


def _verify(token: str, **over: object) -> object:
    args: dict[str, object] = {
        "jwks": JWKS,
        "issuer": "https://i.test",
        "audience": "b",
        "algorithms": ["ES256"],
        "now": NOW,
        "leeway": 10,
    }
    args.update(over)
    return verify(token, **args)  # type: ignore[arg-type]


def test_a_good_token_and_an_audience_list() -> None:
    verified = _verify(_token(jti="j"))
    assert verified.subject == "s" and verified.jti == "j"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("token", "over", "reason"),
    [
        ("x.y", {}, "malformed token"),
        ("!!!.e30.", {}, "malformed token"),
        ("a" * 17000, {}, "larger than 16 KiB"),
        (_token(), {"algorithms": ["RS256"]}, "algorithm 'ES256' is not allowed"),
        (_token(), {"algorithms": ["ES256", "HS256"], "jwks": {"keys": []}}, "key id"),
        (_token(sub=None), {}, "no sub claim"),
        (_token(exp="soon"), {}, "exp claim is not a number"),
        (_token(exp=int(NOW.timestamp()) - 10), {}, "expired token"),
        (_token(iat=int(NOW.timestamp()) + 11), {}, "issued in the future"),
        (_token(jti=5), {}, "jti claim is not a string"),
    ],
    # Named by the reason: an ECDSA signature differs in every process, and xdist's workers must agree on ids.
    ids=lambda v: v if isinstance(v, str) and len(v) < 60 and "." not in v else "-",
)
def test_refusals_carry_a_reason(token: str, over: dict[str, object], reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        _verify(token, **over)


def test_an_unknown_kid_is_its_own_refusal_so_the_caller_can_refetch() -> None:
    with pytest.raises(UnknownKey):
        _verify(_token(), jwks={"keys": [{**KEY.as_dict(private=False), "kid": "other"}]})


def test_a_symmetric_key_in_the_key_set_is_ignored() -> None:
    assert header_of(_token())["alg"] == "ES256"
    with pytest.raises(UnknownKey):
        _verify(_token(), jwks={"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k"}]})


def test_claim_matching_exact_and_glob() -> None:
    claims = {"repository": "acme/app", "ref": "refs/heads/main", "run": 7, "protected": True, "list": ["x"]}
    assert match_claims(claims, {"repository": ["acme/app"]}, glob=False) == {"repository": "acme/app"}
    assert match_claims(claims, {"repository": ["acme/*"]}, glob=False) is None
    assert match_claims(claims, {"repository": ["acme/*"], "ref": ["refs/heads/*"]}, glob=True) is not None
    assert match_claims(claims, {"run": ["7"], "protected": ["true"]}, glob=False) == {
        "run": "7",
        "protected": "true",
    }
    assert match_claims(claims, {"list": ["x"]}, glob=False) is None
    assert match_claims(claims, {"missing": ["*"]}, glob=True) is None
    assert match_claims(claims, {"repository": ["ACME/app"]}, glob=True) is None  # case-sensitive


def test_a_browser_sign_ins_nonce_and_authorized_party() -> None:
    """With a nonce (the console's sign-in): exactly that nonce, and `azp` = us when several audiences."""
    assert _verify(_token(aud="b", nonce="n-1"), nonce="n-1").subject == "s"  # type: ignore[attr-defined]
    assert _verify(_token(nonce="n-1", azp="b"), nonce="n-1").subject == "s"  # type: ignore[attr-defined]
    for token, reason in [
        (_token(aud="b", nonce="n-2"), "nonce mismatch"),
        (_token(aud="b"), "nonce mismatch"),
        (_token(aud="b", nonce=7), "nonce mismatch"),
        (_token(nonce="n-1"), "wrong authorized party"),  # audiences a and b, no azp
        (_token(nonce="n-1", azp="a"), "wrong authorized party"),
    ]:
        with pytest.raises(Refused, match=reason):
            _verify(token, nonce="n-1")
    # Without a nonce (a workload token) neither is looked at.
    assert _verify(_token(nonce="other", azp="a")).subject == "s"  # type: ignore[attr-defined]


def test_list_claims_match_by_item_only_when_asked() -> None:
    claims = {"groups": ["staff", "strongroom-auditors"], "email": "ada@x.test"}
    bound = {"groups": ["strongroom-*"]}
    groups = frozenset({"groups"})
    assert match_claims(claims, bound, glob=True, lists=groups) == {"groups": "strongroom-auditors"}
    assert match_claims(claims, bound, glob=True) is None  # a workload role never matches a list
    assert match_claims(claims, {"groups": ["admins"]}, glob=False, lists=groups) is None
    assert match_claims({"groups": [{"x": 1}, 5]}, {"groups": ["5"]}, glob=False, lists=groups) == {
        "groups": "5"
    }
    assert match_person(claims, bound, glob=True) == {"groups": "strongroom-auditors"}


def test_a_person_matches_by_item_only_in_claims_that_hold_several_values() -> None:
    """A list in `email` or `email_verified` is not several addresses or answers: it never matches."""
    verified = {"email_verified": True}
    assert (
        match_person(
            {"email": ["a@x.test", "boss@x.test"], **verified}, {"email": ["boss@x.test"]}, glob=False
        )
        is None
    )
    assert match_person({"email_verified": [False, True]}, {"email_verified": ["true"]}, glob=False) is None
    assert match_person({"hd": ["x.test"]}, {"hd": ["x.test"]}, glob=True) is None
    assert match_person({"roles": ["a", "ops"]}, {"roles": ["ops"]}, glob=False) == {"roles": "ops"}
    assert match_person({"amr": ["pwd", "mfa"]}, {"amr": ["mfa"]}, glob=False) == {"amr": "mfa"}


def test_a_role_bound_on_email_needs_email_verified_to_be_json_true() -> None:
    bound = {"email": ["boss@corp.example"]}
    address = {"email": "boss@corp.example"}
    assert match_person({**address, "email_verified": True}, bound, glob=False) == {
        "email": "boss@corp.example"
    }
    for unverified in (False, "true", ["true"], [True], 1, None):
        assert match_person({**address, "email_verified": unverified}, bound, glob=False) is None, unverified
    assert match_person(address, bound, glob=False) is None  # no email_verified claim at all
    # Binding email_verified to the string "true" does not admit the string: the role is bound on email.
    spelled = {"email": ["boss@corp.example"], "email_verified": ["true"]}
    assert match_person({**address, "email_verified": "true"}, spelled, glob=False) is None
    # A role not bound on email does not look at email_verified.
    assert match_person({"groups": ["ops"], "email_verified": False}, {"groups": ["ops"]}, glob=False) == {
        "groups": "ops"
    }
