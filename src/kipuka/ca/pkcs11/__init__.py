"""A CA whose key lives in a PKCS#11 token (an HSM; SoftHSM2 in the tests).

The key never leaves the token. It is wrapped as a cryptography private key
(`TokenECKey`, `TokenRSAKey`) whose sign() hashes in software and calls C_Sign
with the raw mechanism (CKM_ECDSA, CKM_RSA_PKCS over a DigestInfo), so every
cryptography builder (certificates, CRLs, OCSP, PKCS#7) signs through the token
and ca/profile.py and ca/revocation.py serve this back end unchanged.

Concurrency. A CA holds `sessions` PKCS#11 sessions, each with one thread of its
own: a signing operation waits (on the event loop, never blocking it) for a free
session up to `session_timeout`, then runs in that session's thread; past the
timeout the caller gets Unavailable (503 + Retry-After). python-pkcs11 calls
C_Initialize(NULL_PTR), which tells a module that the application will not call
it from several threads at once (SoftHSM2 then switches its own locks off, and
concurrent C_Sign calls fail with CKR_GENERAL_ERROR): right after loading, the
module is initialised again with CKF_OS_LOCKING_OK, and only if it refuses is
every C_Sign into it serialised by a per-process lock.

Failures. Any PKCS#11 error while signing means the token or the module went
away (a removed slot, a dead network HSM): the call fails with
InternalError("HSM unreachable: ...", retryable=True) (500, or the next replica
in a pool), health() reports it, and the CA reconnects by itself: it finalises
and re-initialises the module (SoftHSM2 only rescans its tokens then), finds the
token and key again and proves them with a test signature, at most once per
`reconnect_interval`. No restart is needed.

Fork safety. The module is opened lazily by the process that builds the CA:
the server's workers build their CAs after the fork. A module inherited from a
parent process is re-initialised before use.

Where things are:
- settings.py    the [ca.ID] table checked into `Pkcs11Settings`
- module.py      the PKCS#11 library loaded once per process (`Module`), its locking
- token_keys.py  the token key as a cryptography key (`TokenECKey`, `TokenRSAKey`, `token_key`)
- sessions.py    a CA's pool of sessions, one thread each
- authority.py   `PKCS11CA` itself: signing through the pool, health, reconnecting
"""

from kipuka.ca.pkcs11.authority import PKCS11CA, from_config
from kipuka.ca.pkcs11.module import Module
from kipuka.ca.pkcs11.settings import (DEFAULT_MODULE, MODULE_CANDIDATES, OPTION_KEYS, Pkcs11Settings,
                                       settings_from_config)
from kipuka.ca.pkcs11.token_keys import (CKM_ML_DSA, RawSigner, TokenECKey, TokenRSAKey, mechanism_for, refuse_ml_dsa,
                                         token_key)

__all__ = [
    "PKCS11CA", "from_config", "Module", "Pkcs11Settings", "settings_from_config", "DEFAULT_MODULE",
    "MODULE_CANDIDATES", "OPTION_KEYS", "TokenECKey", "TokenRSAKey", "RawSigner", "token_key", "mechanism_for",
    "refuse_ml_dsa", "CKM_ML_DSA",
]
