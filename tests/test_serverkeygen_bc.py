"""/serverkeygen against Bouncy Castle: its EST client, and its CMS for every encrypted form.

* `org.bouncycastle.est.ESTService.simpleEnrollWithServersideCreation` (the
  /serverkeygen call of BC 1.72; newer releases name it serverSideKeyGen), over
  `JsseESTServiceBuilder` with HTTP Basic after the 401 challenge, against the
  label that delivers the unencrypted application/pkcs8 form: BC's client
  reads that form only.
* `CMSEnvelopedData` + `CMSSignedData` (the KdCheck driver of
  tests/unit/test_keydelivery.py) open the csr-key (ECDH), asymmetric (RSA key
  transport to the mTLS certificate) and symmetric (KEK) forms from the server
  and verify the SignedData signature.

Skipped, with the reason, when the jars (Debian libbcpkix-java) or a JDK are absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka import keydelivery as kd
from tests.helpers import Server, b64, certs_from, certs_in_der, new_key, spki, unique, write_identity
from tests.test_serverkeygen import (ASYMMETRIC_DECRYPT_KEY_ID, DECRYPT_KEY_ID, KEK, KEK_ID, SGK, keygen_csr,
                                     keygen_server, octet_string, post, split)
from tests.interop.jvm import compile_or_skip
from tests.unit.test_keydelivery import JAVA_SOURCE


EST_CLIENT = r"""
import java.io.*;
import java.nio.file.*;
import java.security.*;
import java.security.cert.*;
import java.security.spec.ECGenParameterSpec;
import java.util.*;
import org.bouncycastle.asn1.pkcs.PrivateKeyInfo;
import org.bouncycastle.asn1.x500.X500Name;
import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.est.*;
import org.bouncycastle.est.jcajce.*;
import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.bouncycastle.operator.jcajce.JcaContentSignerBuilder;
import org.bouncycastle.pkcs.PKCS10CertificationRequest;
import org.bouncycastle.pkcs.jcajce.JcaPKCS10CertificationRequestBuilder;

/** HOST:PORT LABEL CA-PEM USER OTP CN OUT-KEY OUT-CERT MODE: /serverkeygen with BC's EST client, no KEK.
 *  MODE "preemptive": Basic credentials on the request (an ESTAuth that sets the header);
 *  "challenge": BC's own JcaHttpAuthBuilder, which answers the 401 challenge. */
public class BcServerKeygen {
    public static void main(String[] a) throws Exception {
        Security.addProvider(new BouncyCastleProvider());
        Set<TrustAnchor> anchors = new HashSet<>();
        for (java.security.cert.Certificate c : CertificateFactory.getInstance("X.509")
                .generateCertificates(new FileInputStream(a[2])))
            anchors.add(new TrustAnchor((X509Certificate) c, null));
        JsseESTServiceBuilder builder = new JsseESTServiceBuilder(a[0], JcaJceUtils.getCertPathTrustManager(anchors, null));
        if (!a[1].isEmpty()) builder.withLabel(a[1]);  // "": the unlabeled path
        ESTService est = builder.build();
        KeyPairGenerator kpg = KeyPairGenerator.getInstance("EC", "BC");
        kpg.initialize(new ECGenParameterSpec("P-256"));
        KeyPair throwaway = kpg.generateKeyPair();
        PKCS10CertificationRequest csr = new JcaPKCS10CertificationRequestBuilder(
                new X500Name("CN=" + a[5]), throwaway.getPublic())
            .build(new JcaContentSignerBuilder("SHA256withECDSA").setProvider("BC").build(throwaway.getPrivate()));
        final String basic = "Basic " + Base64.getEncoder().encodeToString(
            (a[3] + ":" + a[4]).getBytes(java.nio.charset.StandardCharsets.UTF_8));
        ESTAuth auth = a[8].equals("preemptive")
            ? (ESTRequestBuilder rb) -> { rb.setHeader("Authorization", basic); }
            : new JcaHttpAuthBuilder("est", a[3], a[4].toCharArray()).setNonceGenerator(new SecureRandom())
                .setProvider("BC").build();
        EnrollmentResponse r = est.simpleEnrollWithServersideCreation(csr, auth);
        PrivateKeyInfo key = r.getPrivateKeyInfo();
        if (key == null) throw new IllegalStateException("no private key in the response");
        Files.write(Paths.get(a[6]), key.getEncoded());
        X509CertificateHolder[] certs = ESTService.storeToArray(r.getStore());
        if (certs.length != 1) throw new IllegalStateException("certificates: " + certs.length);
        Files.write(Paths.get(a[7]), certs[0].getEncoded());
        System.out.println("key " + key.getPrivateKeyAlgorithm().getAlgorithm().getId());
    }
}
"""


@pytest.fixture(scope="module")
def java(tmp_path_factory: pytest.TempPathFactory):
    """Compiled drivers (KdCheck and BcServerKeygen), or a skip saying what is missing."""
    jvm = compile_or_skip(tmp_path_factory.mktemp("bc"), {"KdCheck": JAVA_SOURCE, "BcServerKeygen": EST_CLIENT})
    return jvm.run


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, java) -> Server:
    s = keygen_server(tmp_path_factory.mktemp("keygen-bc")).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def pool(srv: Server) -> tuple[str, str]:
    entity = unique("bc")
    return entity, srv.otp(entity, "--uses", "100", "--label", "any")  # every label


def _bc_est_client(srv: Server, pool, java, tmp_path: Path, mode: str) -> None:
    entity, otp = pool
    out = java("BcServerKeygen", f"localhost:{srv.port}", "keygen-pkcs8", srv.ca_bundle, entity, otp,
               f"{entity}.example.com", str(tmp_path / "key.der"), str(tmp_path / "cert.der"), mode)
    assert "key 1.2.840.10045.2.1" in out
    key = serialization.load_der_private_key((tmp_path / "key.der").read_bytes(), None)
    cert = x509.load_der_x509_certificate((tmp_path / "cert.der").read_bytes())
    assert spki(key.public_key()) == spki(cert.public_key())
    assert cert.subject.rfc4514_string() == f"CN={entity}.example.com"


def test_bouncy_castle_est_client_gets_the_pkcs8_form(srv: Server, pool, java, tmp_path: Path):
    _bc_est_client(srv, pool, java, tmp_path, "preemptive")


def test_bouncy_castle_est_client_with_its_challenge_driven_basic_auth(srv: Server, pool, java, tmp_path: Path):
    _bc_est_client(srv, pool, java, tmp_path, "challenge")


def _bc_open(java, parts: dict[str, bytes], alg: str, key: str, tmp_path: Path) -> None:
    """CMSEnvelopedData decrypts, CMSSignedData verifies; the key inside matches the certificate part."""
    (tmp_path / "sgk.der").write_bytes(parts[SGK])
    out = java("KdCheck", "open", alg, str(tmp_path / "sgk.der"), key, str(tmp_path / "pkg.der"))
    assert "encryptedContentType 1.2.840.113549.1.7.2" in out and "verified 1" in out
    assert "eContentType 2.16.840.1.101.2.1.2.78.5" in out
    (key_der,) = kd.read_asymmetric_key_package((tmp_path / "pkg.der").read_bytes())
    (cert,) = certs_in_der(parts["application/pkcs7-mime; smime-type=certs-only"])
    assert spki(kd.load_private_key(key_der).public_key()) == spki(cert.public_key())


def test_bouncy_castle_opens_the_csr_key_form(srv: Server, pool, java, tmp_path: Path):
    entity, otp = pool
    throwaway, der = keygen_csr(f"{entity}.example.com")
    (tmp_path / "throwaway.der").write_bytes(kd.one_asymmetric_key(throwaway))
    parts = split(post(srv, der, auth=(entity, otp)))
    _bc_open(java, parts, "EC", str(tmp_path / "throwaway.der"), tmp_path)


def test_bouncy_castle_opens_the_asymmetric_form_rsa(srv: Server, pool, java, tmp_path: Path):
    entity, otp = pool
    device_key = new_key("rsa2048")
    _, der = keygen_csr(f"{entity}.example.com", device_key)
    device = certs_from(srv.post("simpleenroll", b64(der), label="keygen", auth=(entity, otp)))[0]
    crt, key = write_identity(tmp_path, "device", device_key, device)
    ski = device.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    _, der = keygen_csr(f"{entity}.example.com", attributes=[(ASYMMETRIC_DECRYPT_KEY_ID, octet_string(ski))])
    parts = split(post(srv, der, cert=(crt, key)))
    (tmp_path / "device.der").write_bytes(kd.one_asymmetric_key(device_key))
    _bc_open(java, parts, "RSA", str(tmp_path / "device.der"), tmp_path)


def test_bouncy_castle_opens_the_symmetric_form(srv: Server, pool, java, tmp_path: Path):
    entity, otp = pool
    _, der = keygen_csr(f"{entity}.example.com", attributes=[(DECRYPT_KEY_ID, octet_string(KEK_ID))])
    parts = split(post(srv, der, auth=(entity, otp)))
    _bc_open(java, parts, "KEK", KEK.hex(), tmp_path)
