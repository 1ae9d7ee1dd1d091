# Copied from the team's shared bench kit (/work/shared/bench/make_csrs.py), unchanged below this
# comment, so that a clone of the repository without /work/shared can run benchmarks/run.py's OTP mode.
"""Write N distinct EC P-256 CSRs, one unwrapped base64 DER per line, for enroll_many.lua.

usage: make_csrs.py N PREFIX OUT [NCREDS]
CN=PREFIX-i, or with NCREDS: CN=PREFIX<i mod NCREDS>.example.com, so that line i belongs to the
entity PREFIX<i mod NCREDS> (enroll_many.lua pairs line i with credential i mod NCREDS).
"""
import base64, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
n, prefix, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ncreds = int(sys.argv[4]) if len(sys.argv) > 4 else 0
with open(out, "w") as f:
    for i in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        cn = f"{prefix}{i % ncreds}.example.com" if ncreds else f"{prefix}-{i}"
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .sign(key, hashes.SHA256()))
        f.write(base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode() + "\n")
