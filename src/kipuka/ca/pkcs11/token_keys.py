"""The CA key in the token as a cryptography private key, so every cryptography builder signs through C_Sign."""

from __future__ import annotations

from typing import Any, Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from kipuka import pq
from kipuka.ca.pkcs11.module import Module, _pkcs11
from kipuka.ca.pkcs11.settings import Pkcs11Settings

# DER DigestInfo prefixes (RFC 8017 9.2 note 1) for CKM_RSA_PKCS, which signs what it is given.
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
}

RawSigner = Callable[[bytes], bytes]  # what C_Sign returns for the mechanism the key type uses


def _digest(data: bytes, algorithm: Any) -> tuple[bytes, hashes.HashAlgorithm]:
    if isinstance(algorithm, utils.Prehashed):
        return data, algorithm._algorithm  # type: ignore[attr-defined]
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize(), algorithm


class _InToken:
    """What both token keys share: the key material stays in the token, and copies are the same key."""

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise TypeError("the CA key never leaves the token")

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict) -> Any:
        return self


class TokenECKey(_InToken, ec.EllipticCurvePrivateKey):
    """An EC key held by a token: sign() hashes here and signs the digest with CKM_ECDSA."""

    def __init__(self, public_key: ec.EllipticCurvePublicKey, signer: RawSigner) -> None:
        self._public = public_key
        self._signer = signer

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TypeError("a token EC key signs with ECDSA only")
        digest, _ = _digest(data, signature_algorithm.algorithm)
        raw = self._signer(digest)  # r || s, each as long as the order
        half = len(raw) // 2
        return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise TypeError("the CA key in the token only signs")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise TypeError("the CA key never leaves the token")


class TokenRSAKey(_InToken, rsa.RSAPrivateKey):
    """An RSA key held by a token: PKCS#1 v1.5 over a DigestInfo built here, with CKM_RSA_PKCS."""

    def __init__(self, public_key: rsa.RSAPublicKey, signer: RawSigner) -> None:
        self._public = public_key
        self._signer = signer

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def sign(self, data: bytes, padding_: padding.AsymmetricPadding, algorithm: Any) -> bytes:
        if not isinstance(padding_, padding.PKCS1v15):
            raise TypeError("a token RSA key signs with PKCS#1 v1.5 only")
        digest, alg = _digest(data, algorithm)
        prefix = _DIGEST_INFO.get(alg.name)
        if prefix is None:
            raise TypeError(f"unsupported hash {alg.name} for a token RSA key")
        return self._signer(prefix + digest)

    def decrypt(self, ciphertext: bytes, padding_: padding.AsymmetricPadding) -> bytes:
        raise TypeError("the CA key in the token only signs")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise TypeError("the CA key never leaves the token")


def token_key(public_key: Any, signer: RawSigner) -> CertificateIssuerPrivateKeyTypes:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return TokenECKey(public_key, signer)
    if isinstance(public_key, rsa.RSAPublicKey):
        return TokenRSAKey(public_key, signer)
    raise ValueError(f"unsupported CA key type {type(public_key).__name__} for a token")


CKM_ML_DSA = 0x1D  # PKCS#11 3.2: pure ML-DSA sign / verify (python-pkcs11 0.10 has no name for it)


def refuse_ml_dsa(settings: Pkcs11Settings, public_key: Any) -> None:
    """An ML-DSA CA key in a token is refused at start-up, with the reason, never at the first request.

    The token is asked whether it offers CKM_ML_DSA (SoftHSM2 2.6 does not): that is the
    message an operator needs. kipuka has no PKCS#11 ML-DSA signing path yet (python-pkcs11
    knows no ML-DSA key type), so a token that does offer the mechanism is refused too, saying so.
    """
    kind = pq.key_type(public_key)
    if kind is None:
        return
    where = f"ca.{settings.ca_id}"
    module = Module.get(settings.module)
    try:
        with module.exclusive():
            token = module.find_token(settings)
            mechanisms = {int(m) for m in token.slot.get_mechanisms()}
    except Exception as exc:  # noqa: BLE001 - any failure: the operator gets both facts
        raise ValueError(f"{where}: the CA certificate's key is {kind} (ML-DSA), and the "
                         f"{settings.token_name()} could not be asked whether it signs ML-DSA ({exc}); kipuka "
                         f"does not sign with ML-DSA keys in PKCS#11 tokens yet: make this a local CA") from None
    if CKM_ML_DSA not in mechanisms:
        raise ValueError(f"{where}: the CA certificate's key is {kind} (ML-DSA), but the "
                         f"{settings.token_name()} offers no CKM_ML_DSA mechanism (PKCS#11 3.2), so it cannot "
                         f"sign for this CA (SoftHSM2 cannot); keep an ML-DSA CA key in a local CA "
                         f"(type = \"local\") or in a token that supports ML-DSA")
    raise ValueError(f"{where}: the {settings.token_name()} offers CKM_ML_DSA, but kipuka does not sign with "
                     f"ML-DSA keys in PKCS#11 tokens yet; keep this {kind} CA key in a local CA (type = \"local\")")


def mechanism_for(public_key: Any) -> Any:
    p11 = _pkcs11()
    return p11.Mechanism.ECDSA if isinstance(public_key, ec.EllipticCurvePublicKey) else p11.Mechanism.RSA_PKCS
