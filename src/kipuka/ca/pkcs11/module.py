"""The PKCS#11 module (the shared library) as loaded once per process, shared by every CA naming it.

A module is initialised so that it locks for itself (CKF_OS_LOCKING_OK) where it
can, else every C_Sign into it is serialised; one inherited across a fork is
re-initialised before use (see the package docstring).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

from kipuka.ca.pkcs11.settings import Pkcs11Settings

log = logging.getLogger("kipuka.ca.pkcs11")


def _pkcs11():  # type: ignore[no-untyped-def]
    try:
        import pkcs11
    except ImportError:  # pragma: no cover - depends on the install
        raise ValueError("the pkcs11 CA type needs python-pkcs11: pip install 'kipuka[hsm]'") from None
    return pkcs11


class Module:
    """One PKCS#11 library loaded in this process.

    `lock` serialises every call into it (see the package docstring); `generation`
    changes whenever the library is re-initialised, which invalidates every session
    opened before. Logging in is per application and token, so the first session
    of a token (kept open: closing it would log every session out) holds the login.
    """

    _modules: dict[str, "Module"] = {}
    _loaded_by: dict[str, int] = {}  # library path -> pid that initialised it
    _registry_lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        self._rw = _RWLock()
        self.concurrent = False  # C_Initialize'd with CKF_OS_LOCKING_OK: C_Sign may run in parallel
        self.generation = 0
        self._lib: Any = None
        self._logins: dict[int, Any] = {}  # slot id -> the session holding the login

    def exclusive(self) -> Any:
        """Held for everything but C_Sign: finding, opening, logging in, re-initialising."""
        return self._rw.write()

    def signing(self) -> Any:
        """Held around C_Sign: shared when the module does its own locking, else exclusive."""
        return self._rw.read() if self.concurrent else self._rw.write()

    @classmethod
    def get(cls, path: str) -> "Module":
        with cls._registry_lock:
            module = cls._modules.get(path)
            if module is None or module.pid != os.getpid():
                module = cls._modules[path] = Module(path)
            return module

    def lib(self) -> Any:
        """The loaded, initialised library (call with exclusive() held)."""
        if self._lib is None:
            lib = _pkcs11().lib(self.path)
            loaded_by = Module._loaded_by.get(self.path)
            if loaded_by is not None and loaded_by != os.getpid():
                # Initialised before a fork: a child must run C_Initialize itself.
                log.warning("PKCS#11 module %s was initialised by process %d; re-initialising in %d",
                            self.path, loaded_by, os.getpid())
                try:
                    lib.reinitialize()
                except Exception:  # the parent's state may not finalise cleanly
                    lib.initialize()
            Module._loaded_by[self.path] = os.getpid()
            self._lib = lib
            self.concurrent = _initialize_with_os_locking(self.path)
        return self._lib

    def reinitialize(self, seen_generation: int) -> None:
        """C_Finalize + C_Initialize, unless someone did it since `seen_generation` (exclusive() held)."""
        if self.generation != seen_generation or self._lib is None:
            return
        self._logins.clear()  # finalising closed every session and logged out
        self.generation += 1
        try:
            self._lib.reinitialize()
            self.concurrent = _initialize_with_os_locking(self.path)
        except Exception:
            # A half-finalised library: unload it, the next lib() loads it anew.
            try:
                _pkcs11().unload(self.path)
            except Exception:
                pass
            self._lib = None
            raise

    def find_token(self, settings: Pkcs11Settings) -> Any:
        """The token of `settings` (exclusive() held); NoSuchToken if absent."""
        p11 = _pkcs11()
        for slot in self.lib().get_slots(token_present=True):
            if settings.slot is not None and slot.slot_id != settings.slot:
                continue
            try:
                token = slot.get_token()
            except p11.PKCS11Error:  # a slot going away under us
                continue
            if settings.token_label is None or token.label == settings.token_label:
                return token
        raise p11.NoSuchToken(f"no {settings.token_name()} in {self.path}")

    def login(self, token: Any, pin: str) -> Any:
        """The session holding this application's login to `token` (exclusive() held)."""
        p11 = _pkcs11()
        slot_id = token.slot.slot_id
        session = self._logins.get(slot_id)
        if session is None:
            try:
                session = token.open(user_pin=pin)
            except p11.UserAlreadyLoggedIn:  # another object of this process logged in
                session = token.open()
            self._logins[slot_id] = session
        return session

    def forget_login(self, token: Any) -> None:
        self._logins.pop(token.slot.slot_id, None)


class _RWLock:
    """Many readers (C_Sign) or one writer (anything else); waiting writers go first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer: int | None = None  # thread id
        self._depth = 0
        self._waiting_writers = 0

    @contextlib.contextmanager
    def read(self) -> Any:
        me = threading.get_ident()
        if self._writer == me:  # a writer may sign (a reconnect's test signature)
            yield
            return
        with self._cond:
            while self._writer is not None or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Any:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._depth += 1
            else:
                self._waiting_writers += 1
                while self._writer is not None or self._readers:
                    self._cond.wait()
                self._waiting_writers -= 1
                self._writer, self._depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self._writer = None
                    self._cond.notify_all()


CKF_OS_LOCKING_OK = 0x2


def _initialize_with_os_locking(path: str) -> bool:
    """Redo C_Initialize with CKF_OS_LOCKING_OK, so that the module locks for itself.

    python-pkcs11 passes NULL_PTR, which promises single-threaded use: SoftHSM2 then
    turns its mutexes off and parallel C_Sign calls fail. Right after loading (no
    session open yet) finalise and initialise again with the flag, through the same
    library (python-pkcs11's function table stays valid). On any failure the module
    is put back as it was and every call into it is serialised instead.
    """
    import ctypes

    class InitArgs(ctypes.Structure):
        _fields_ = [("create_mutex", ctypes.c_void_p), ("destroy_mutex", ctypes.c_void_p),
                    ("lock_mutex", ctypes.c_void_p), ("unlock_mutex", ctypes.c_void_p),
                    ("flags", ctypes.c_ulong), ("reserved", ctypes.c_void_p)]

    try:
        so = ctypes.CDLL(path)
        finalize, initialize = so.C_Finalize, so.C_Initialize
    except (OSError, AttributeError):
        return False
    for fn in (finalize, initialize):
        fn.restype, fn.argtypes = ctypes.c_ulong, [ctypes.c_void_p]
    if finalize(None) != 0:
        return False
    args = InitArgs(None, None, None, None, CKF_OS_LOCKING_OK, None)
    if initialize(ctypes.byref(args)) == 0:
        return True
    if initialize(None) != 0:  # pragma: no cover - the module refuses both
        log.error("PKCS#11 module %s could not be initialised again", path)
    return False
