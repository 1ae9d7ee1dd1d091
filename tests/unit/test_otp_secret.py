"""The shape of a generated OTP: what a provisioning tool or a shell must be able to pass along."""

from kipuka.ra import otp


def test_an_otp_never_starts_with_a_dash(monkeypatch):
    """'-x...' would be read as an option by kipuka-est and curl-like tools, and as a formula in a CSV."""
    draws = iter(["-leading-dash-value-xx", "Ok_value-without-lead"])
    monkeypatch.setattr(otp.secrets, "token_urlsafe", lambda n: next(draws))
    assert otp.new_secret() == "Ok_value-without-lead"


def test_an_otp_holds_128_random_bits_and_no_colon():
    values = {otp.new_secret() for _ in range(2000)}
    assert len(values) == 2000
    assert all(len(v) == 22 and ":" not in v and not v.startswith("-") for v in values)
