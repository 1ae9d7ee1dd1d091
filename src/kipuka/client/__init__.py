"""kipuka's EST client: a library (`EstClient`) and the `kipuka-est` command.

The client knows nothing of the server's internals; it speaks RFC 7030 /
RFC 8951 over HTTPS and tolerates the conventions of other EST servers
(libest, globalsign/est). See `kipuka.client.client` for the API and
`kipuka.client.cli` for the command line.
"""

from kipuka.client.client import EstClient
from kipuka.client.csr import CsrSpec, generate_key, load_csr, load_private_key
from kipuka.client.errors import (BadRequest, BootstrapError, ChannelBindingError, ClientError, DecryptionError,
                                  EstError, Forbidden, HttpError, InvalidResponse, NotFound, NotImplementedByServer,
                                  PendingTimeout, ServerError, ServiceUnavailable, TlsError, TransportError,
                                  Unauthorized)
from kipuka.client.results import CmcResponse, Issued, ServerKeygenResult
from kipuka.client.serverkeygen import CSR_KEY, PKCS8, AsymmetricDecryptKey, SymmetricDecryptKey
from kipuka.client.verify import fingerprint
from kipuka.client.wire import CsrAttributes

__all__ = [
    "EstClient", "Issued", "ServerKeygenResult", "CmcResponse", "AsymmetricDecryptKey", "SymmetricDecryptKey",
    "PKCS8", "CSR_KEY", "CsrSpec", "CsrAttributes", "generate_key", "load_csr", "load_private_key", "fingerprint",
    "EstError", "TransportError", "TlsError", "HttpError", "ClientError", "BadRequest", "Unauthorized",
    "Forbidden", "NotFound", "ServerError", "NotImplementedByServer", "ServiceUnavailable", "PendingTimeout",
    "InvalidResponse", "BootstrapError", "ChannelBindingError", "DecryptionError",
]
