"""POST /serverkeygen: decode the CSR, ask the RA for a key and certificate, encode multipart/mixed.

The body has two base64 parts, CRLF line ends, nothing after the closing
delimiter but its CRLF, and a Content-Length (see kipuka.keydelivery.multipart).
The key part comes first, as in RFC 7030's example (Appendix A.4): some
clients take the first part for the key.

1. the key: `application/pkcs8` (an unencrypted PrivateKeyInfo, RFC 7030 4.4.2's
   form when the CSR names no decryption key) when the delivery is "pkcs8", else
   `application/pkcs7-mime; smime-type=server-generated-key` (EnvelopedData
   around SignedData around the key);
2. the certificate, as /simpleenroll returns it: `application/pkcs7-mime;
   smime-type=certs-only`, a certs-only PKCS#7.
"""

from __future__ import annotations

from aiohttp import web

from kipuka.est import codec
from kipuka.keydelivery import PKCS8, SERVER_GENERATED_KEY, multipart_mixed
from kipuka.ra.authority import Authority


async def handle(request: web.Request, authority: Authority, label: str, csr_der: bytes) -> web.Response:
    from kipuka.est.identity import requester_of

    result = await authority.keygen.serverkeygen(label, csr_der, requester_of(request))
    key_type = PKCS8 if result.delivery == "pkcs8" else SERVER_GENERATED_KEY
    content_type, body = multipart_mixed([(key_type, result.key_part),
                                          (codec.CERTS_ONLY, codec.certs_only([result.certificate]))])
    return web.Response(body=body, headers={"Content-Type": content_type})
