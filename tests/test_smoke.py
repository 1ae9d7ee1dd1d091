from tests.helpers import b64, certs_from, make_csr, unique


def test_otp_enrollment_returns_a_certificate_for_the_csr_key(server):
    entity = unique()
    otp = server.otp(entity)
    key, der = make_csr(f"{entity}.example.com")
    cert = certs_from(server.post("simpleenroll", b64(der), auth=(entity, otp)))[0]
    assert cert.public_key() == key.public_key()
