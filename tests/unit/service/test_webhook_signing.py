"""Standard Webhooks signatures: the published test vector, rotation, and what a receiver refuses."""

from __future__ import annotations

import pytest

from service.webhook_signing import SignatureInvalid, headers, new_secret, sign, verify

# The vector the Standard Webhooks reference libraries test against.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MESSAGE_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'


def test_the_published_vector() -> None:
    assert sign(SECRET, MESSAGE_ID, TIMESTAMP, BODY) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_delivery_signed_with_either_live_secret_verifies_with_each() -> None:
    old, new = SECRET, new_secret()
    sent = headers([new, old], MESSAGE_ID, TIMESTAMP, BODY)
    assert len(sent["webhook-signature"].split()) == 2
    verify(old, sent, BODY, now=TIMESTAMP + 10)
    verify(new, sent, BODY, now=TIMESTAMP - 10)


@pytest.mark.parametrize(
    ("body", "now", "change"),
    [
        (BODY + b" ", TIMESTAMP, {}),  # a tampered body
        (BODY, TIMESTAMP + 301, {}),  # too late: a replay
        (BODY, TIMESTAMP, {"webhook-id": "msg_other"}),  # another delivery's signature
        (BODY, TIMESTAMP, {"webhook-timestamp": str(TIMESTAMP + 1)}),
        (BODY, TIMESTAMP, {"webhook-signature": "v1,AAAA"}),
        (BODY, TIMESTAMP, {"webhook-timestamp": "soon"}),
    ],
)
def test_a_receiver_refuses_what_we_did_not_send_now(body: bytes, now: int, change: dict[str, str]) -> None:
    sent = {**headers([SECRET], MESSAGE_ID, TIMESTAMP, BODY), **change}
    with pytest.raises(SignatureInvalid):
        verify(SECRET, sent, body, now=now)


def test_secrets_are_new_and_long_enough() -> None:
    made = {new_secret() for _ in range(10)}
    assert len(made) == 10
    assert all(s.startswith("whsec_") and len(s) == len("whsec_") + 44 for s in made)  # 32 bytes
    with pytest.raises(ValueError, match="whsec_"):
        sign("not-a-secret", MESSAGE_ID, TIMESTAMP, BODY)
