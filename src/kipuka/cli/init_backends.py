"""The other back ends of `kipuka init`: a Dogtag PKI CA and an upstream EST server.

`kipuka init DIR --dogtag-url URL ...` adds a `[ca.dogtag]` table (type "dogtag")
with a `corp-dogtag` label, `--upstream-url URL ...` a `[ca.upstream]` table (type
"est", kipuka as the RA) with a `corp-upstream` label; `--hsm` already puts the
iot-fleet CA in a PKCS#11 token. One generated file can so carry one label per
back-end type. Without these options the file shows both tables commented out, as
examples, so that a reader sees how labels mix back ends.

Every option is checked before anything is written (an https URL of the right
shape, files that exist and hold what they should, a key that matches its
certificate), and the error names the option. The files given are copied into
DIR (keys and password files into DIR/private, mode 0600) so that the
deployment stays one self-contained folder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka.config import ID_KP_CMC_RA, LABEL_RE

EST_PATH = "/.well-known/est"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROFILE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
DOGTAG_OPTIONS = ("dogtag_agent_cert", "dogtag_agent_key", "dogtag_ca_bundle", "dogtag_profile", "dogtag_chain")
UPSTREAM_OPTIONS = ("upstream_label", "upstream_ca_bundle", "upstream_ra_cert", "upstream_ra_key",
                    "upstream_username", "upstream_password_env", "upstream_password_file", "upstream_chain")


def add_arguments(sp: argparse.ArgumentParser) -> None:
    """The --dogtag-* and --upstream-* options of `kipuka init`."""
    g = sp.add_argument_group("a Dogtag PKI CA (docs/dogtag.md)",
                              "--dogtag-url adds a [ca.dogtag] table and a corp-dogtag label")
    g.add_argument("--dogtag-url", metavar="URL", help="https://HOST[:PORT] of the Dogtag CA")
    g.add_argument("--dogtag-agent-cert", type=Path, metavar="FILE",
                   help="PEM certificate of kipuka's Dogtag agent user (required with --dogtag-url)")
    g.add_argument("--dogtag-agent-key", type=Path, metavar="FILE",
                   help="its unencrypted PEM private key (required; copied to DIR/private)")
    g.add_argument("--dogtag-ca-bundle", type=Path, metavar="FILE",
                   help="PEM anchors for Dogtag's TLS certificate (default: the system's CAs)")
    g.add_argument("--dogtag-profile", metavar="ID", help="the Dogtag profile of corp-dogtag (default caServerCert)")
    g.add_argument("--dogtag-chain", type=Path, metavar="FILE",
                   help="Dogtag's CA chain, issuing CA first (default: fetched from Dogtag at start)")
    u = sp.add_argument_group("an upstream EST server as the CA, kipuka its RA (docs/upstream-est.md)",
                              "--upstream-url adds a [ca.upstream] table (type est) and a corp-upstream label")
    u.add_argument("--upstream-url", metavar="URL", help="https://HOST[:PORT] of the upstream EST server")
    u.add_argument("--upstream-label", metavar="LABEL", help="the upstream's EST label (default: its unlabeled path)")
    u.add_argument("--upstream-ca-bundle", type=Path, metavar="FILE",
                   help="PEM anchors for the upstream's TLS certificate (default: the system's CAs)")
    u.add_argument("--upstream-ra-cert", type=Path, metavar="FILE",
                   help="the RA's TLS client certificate, with id-kp-cmcRA (PEM)")
    u.add_argument("--upstream-ra-key", type=Path, metavar="FILE", help="its unencrypted PEM private key")
    u.add_argument("--upstream-username", metavar="NAME", help="HTTP Basic user name at the upstream")
    u.add_argument("--upstream-password-env", metavar="VAR",
                   help="environment variable holding the Basic password when kipuka serves")
    u.add_argument("--upstream-password-file", type=Path, metavar="FILE",
                   help="file holding the Basic password (copied to DIR/private)")
    u.add_argument("--upstream-chain", type=Path, metavar="FILE",
                   help="the upstream's CA chain, issuing CA first (a pin; lets kipuka start when it is down)")


@dataclass(frozen=True)
class DogtagChoice:
    url: str
    agent_cert: Path
    agent_key: Path
    profile: str = "caServerCert"
    ca_bundle: Path | None = None
    chain: Path | None = None


@dataclass(frozen=True)
class UpstreamChoice:
    url: str
    label: str | None = None
    ca_bundle: Path | None = None
    ra_cert: Path | None = None
    ra_key: Path | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    chain: Path | None = None


@dataclass(frozen=True)
class Backends:
    """What `kipuka init` was asked to add beside its local CAs (nothing: the examples only)."""

    dogtag: DogtagChoice | None = None
    upstream: UpstreamChoice | None = None

    def client_anchors(self) -> list[x509.Certificate]:
        """CA chains given with --*-chain: devices re-enroll with certificates those CAs issued."""
        chains = [c.chain for c in (self.dogtag, self.upstream) if c is not None and c.chain is not None]
        return [cert for path in chains for cert in x509.load_pem_x509_certificates(path.read_bytes())]

    def install(self, target: Path) -> str:
        """Copy the given files into the deployment `target`; return the kipuka.toml text to append."""
        parts = [INTRO]
        parts.append(_install_dogtag(self.dogtag, target) if self.dogtag else DOGTAG_EXAMPLE)
        parts.append(_install_upstream(self.upstream, target) if self.upstream else UPSTREAM_EXAMPLE)
        return "\n".join(parts)


# --- the options, checked ------------------------------------------------------------------

def backends_from_args(args: argparse.Namespace) -> Backends:
    """Check every --dogtag-*/--upstream-* option before `kipuka init` writes anything."""
    return Backends(dogtag=_dogtag_from_args(args), upstream=_upstream_from_args(args))


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if getattr(args, n, None) is not None]


def _dogtag_from_args(args: argparse.Namespace) -> DogtagChoice | None:
    if args.dogtag_url is None:
        if given := _given(args, DOGTAG_OPTIONS):
            raise ValueError(f"{_option(given[0])} needs --dogtag-url")
        return None
    url = https_origin(args.dogtag_url, "--dogtag-url", "the Dogtag CA, e.g. https://ca.example.com:8443",
                       allowed_paths=("",))
    for name in ("dogtag_agent_cert", "dogtag_agent_key"):
        if getattr(args, name) is None:
            raise ValueError(f"--dogtag-url needs {_option(name)} FILE: Dogtag authenticates kipuka as an agent "
                             f"by its TLS client certificate")
    check_identity(args.dogtag_agent_cert, args.dogtag_agent_key, "--dogtag-agent-cert", "--dogtag-agent-key")
    profile = args.dogtag_profile or "caServerCert"
    if not _PROFILE.match(profile):
        raise ValueError(f"--dogtag-profile: {profile!r} is not a Dogtag profile id (letters, digits, '_', '.', '-')")
    return DogtagChoice(url=url, agent_cert=args.dogtag_agent_cert, agent_key=args.dogtag_agent_key, profile=profile,
                        ca_bundle=_certificates_file(args.dogtag_ca_bundle, "--dogtag-ca-bundle"),
                        chain=_certificates_file(args.dogtag_chain, "--dogtag-chain"))


def _upstream_from_args(args: argparse.Namespace) -> UpstreamChoice | None:
    if args.upstream_url is None:
        if given := _given(args, UPSTREAM_OPTIONS):
            raise ValueError(f"{_option(given[0])} needs --upstream-url")
        return None
    url = https_origin(args.upstream_url, "--upstream-url", "the upstream EST server, e.g. https://ca.example.com:9443",
                       allowed_paths=("", EST_PATH))
    label = args.upstream_label
    if label is not None and not LABEL_RE.match(label):
        raise ValueError(f"--upstream-label: {label!r} is not an EST label (letters, digits, '.', '_', '-'; "
                         f"at most 64); leave it out for the upstream's unlabeled path")
    ra_cert, ra_key = args.upstream_ra_cert, args.upstream_ra_key
    if (ra_cert is None) != (ra_key is None):
        raise ValueError("--upstream-ra-cert and --upstream-ra-key go together")
    if ra_cert is not None:
        cert = check_identity(ra_cert, ra_key, "--upstream-ra-cert", "--upstream-ra-key")
        if not _has_cmc_ra(cert):
            print(f"kipuka: warning: --upstream-ra-cert {ra_cert} carries no id-kp-cmcRA ({ID_KP_CMC_RA}); "
                  f"a kipuka upstream accepts an RA only with it", file=sys.stderr)
    username, pw_env, pw_file = args.upstream_username, args.upstream_password_env, args.upstream_password_file
    if username is not None:
        if not username or ":" in username:
            raise ValueError("--upstream-username: a non-empty HTTP Basic user name without ':'")
        if (pw_env is None) == (pw_file is None):
            raise ValueError("--upstream-username needs exactly one of --upstream-password-env VAR and "
                             "--upstream-password-file FILE (never the password itself)")
    elif pw_env is not None or pw_file is not None:
        raise ValueError(f"{'--upstream-password-env' if pw_env is not None else '--upstream-password-file'} "
                         f"needs --upstream-username")
    if ra_cert is None and username is None:
        raise ValueError("--upstream-url needs the RA's credentials: --upstream-ra-cert and --upstream-ra-key "
                         "(a TLS client certificate with id-kp-cmcRA) and/or --upstream-username with "
                         "--upstream-password-env or --upstream-password-file")
    if pw_env is not None:
        if not _ENV_NAME.match(pw_env):
            raise ValueError(f"--upstream-password-env: {pw_env!r} is not an environment variable name")
        if not os.environ.get(pw_env):
            print(f"kipuka: note: set ${pw_env} to the upstream password before `kipuka serve`", file=sys.stderr)
    if pw_file is not None:
        _require_file(pw_file, "--upstream-password-file")
        if not pw_file.read_text(encoding="utf-8").rstrip("\r\n"):
            raise ValueError(f"--upstream-password-file: {pw_file} is empty")
    return UpstreamChoice(url=url, label=label, ca_bundle=_certificates_file(args.upstream_ca_bundle,
                                                                             "--upstream-ca-bundle"),
                          ra_cert=ra_cert, ra_key=ra_key, username=username, password_env=pw_env,
                          password_file=pw_file, chain=_certificates_file(args.upstream_chain, "--upstream-chain"))


def https_origin(url: str, option: str, what: str, allowed_paths: tuple[str, ...]) -> str:
    """An https://HOST[:PORT] URL (with one of `allowed_paths`), without a trailing slash; else a clear error."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"{option}: {url!r} is not a URL with a port from 1 to 65535; expected {what}") from None
    if parts.scheme != "https":
        raise ValueError(f"{option}: expected an https:// URL of {what}, got {url!r}")
    if not parts.hostname or any(c.isspace() or c in '"\\' for c in parts.netloc):
        raise ValueError(f"{option}: {url!r} names no host; expected {what}")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ValueError(f"{option}: expected https://HOST[:PORT] without credentials, query or fragment, got {url!r}")
    if parts.path.rstrip("/") not in allowed_paths:
        raise ValueError(f"{option}: expected https://HOST[:PORT] with no path, got {url!r}")
    if port == 0:
        raise ValueError(f"{option}: the port must be from 1 to 65535, got {url!r}")
    return url.rstrip("/")


def _require_file(path: Path, option: str) -> None:
    if not path.is_file():
        raise ValueError(f"{option}: no such file: {path}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{option}: cannot read {path}")


def _certificates_file(path: Path | None, option: str) -> Path | None:
    if path is not None:
        _load_certificates(path, option)
    return path


def _load_certificates(path: Path, option: str) -> list[x509.Certificate]:
    _require_file(path, option)
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError:
        certs = []
    if not certs:
        raise ValueError(f"{option}: {path} holds no PEM certificate")
    return certs


def check_identity(cert_path: Path, key_path: Path, cert_option: str, key_option: str) -> x509.Certificate:
    """A PEM certificate and the unencrypted key that matches it (a TLS client identity)."""
    cert = _load_certificates(cert_path, cert_option)[0]
    _require_file(key_path, key_option)
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except TypeError:
        raise ValueError(f"{key_option}: {key_path} is encrypted; give it unencrypted (`openssl pkey -in "
                         f"{key_path} -out plain.key`): it is stored in DIR/private, mode 0600") from None
    except ValueError:
        raise ValueError(f"{key_option}: {key_path} holds no PEM private key") from None
    if key.public_key() != cert.public_key():
        raise ValueError(f"{key_option}: {key_path} is not the key of {cert_option} {cert_path}")
    return cert


def _has_cmc_ra(cert: x509.Certificate) -> bool:
    try:
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return any(u.dotted_string == ID_KP_CMC_RA for u in ekus)


# --- files and tables ----------------------------------------------------------------------

def _copy(source: Path, target: Path, name: str, secret: bool = False) -> str:
    """Copy a file into the deployment; secrets go mode 0600. Returns its path relative to `target`."""
    dest = target / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if secret:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(source.read_bytes())
        os.chmod(dest, 0o600)
    else:
        shutil.copyfile(source, dest)
    return name


def _line(key: str, value: object, comment: str = "") -> str:
    text = f"{key} = {json.dumps(value)}"  # a JSON string or boolean is a valid TOML one
    return f"{text.ljust(40)} # {comment}" if comment else text


def _install_dogtag(c: DogtagChoice, target: Path) -> str:
    lines = ["# A Dogtag PKI CA (docs/dogtag.md): kipuka forwards each CSR over Dogtag's REST API, signed",
             "# in as a Dogtag agent with the client certificate below; Dogtag's profile decides the certificate.",
             "[ca.dogtag]", 'type = "dogtag"', _line("url", c.url),
             _line("agent_cert", _copy(c.agent_cert, target, "dogtag/agent.pem"),
                   'a Dogtag user in "Certificate Manager Agents"'),
             _line("agent_key", _copy(c.agent_key, target, "private/dogtag-agent.key", secret=True))]
    if c.ca_bundle is not None:
        lines.append(_line("ca_bundle", _copy(c.ca_bundle, target, "dogtag/ca-bundle.pem"),
                           "trust for Dogtag's TLS certificate"))
    else:
        lines.append("# ca_bundle: none, Dogtag's TLS certificate is checked against the system's CAs")
    lines += [_line("profile", c.profile, "the Dogtag profile of the labels of this CA"),
              _line("approve", True, "kipuka approves, as agent, what the profile holds")]
    if c.chain is not None:
        lines.append(_line("chain", _copy(c.chain, target, "dogtag/chain.pem"),
                           "Dogtag's CA chain (also in tls/client-ca.pem)"))
    lines += ["", "[labels.corp-dogtag]", 'ca = "dogtag"']
    return "\n".join(lines) + "\n"


def _install_upstream(c: UpstreamChoice, target: Path) -> str:
    lines = ["# Another EST server as the CA, kipuka as its RA (docs/upstream-est.md): the label's policy",
             "# decides what is forwarded, the upstream's CA what the certificate holds.",
             "[ca.upstream]", 'type = "est"', _line("url", c.url)]
    if c.label is not None:
        lines.append(_line("label", c.label, "the upstream's EST label"))
    if c.ca_bundle is not None:
        lines.append(_line("ca_bundle", _copy(c.ca_bundle, target, "upstream/ca-bundle.pem"),
                           "trust for the upstream's TLS certificate"))
    else:
        lines.append("# ca_bundle: none, the upstream's TLS certificate is checked against the system's CAs")
    if c.ra_cert is not None and c.ra_key is not None:
        lines += [_line("ra_cert", _copy(c.ra_cert, target, "upstream/ra.pem"), "the RA's TLS client certificate"),
                  _line("ra_key", _copy(c.ra_key, target, "private/upstream-ra.key", secret=True))]
    if c.username is not None:
        lines.append(_line("username", c.username, "HTTP Basic credentials at the upstream"))
        if c.password_env is not None:
            lines.append(_line("password_env", c.password_env, "the password comes from this variable"))
        elif c.password_file is not None:
            lines.append(_line("password_file", _copy(c.password_file, target, "private/upstream.pw", secret=True)))
    if c.chain is not None:
        lines.append(_line("chain", _copy(c.chain, target, "upstream/chain.pem"),
                           "pinned upstream CA chain (also in tls/client-ca.pem)"))
    lines += ["", "[labels.corp-upstream]", 'ca = "upstream"']
    return "\n".join(lines) + "\n"


INTRO = """\

# --- CAs of other back ends -----------------------------------------------------------
# Labels mix back ends freely: each [labels.NAME] signs with the [ca.ID] it names. Besides
# the local keys above, a CA can be a key inside a PKCS#11 token (`kipuka init --hsm`,
# docs/hsm.md), a Dogtag PKI CA (docs/dogtag.md) or another EST server with kipuka as its
# RA (docs/upstream-est.md): `kipuka init --dogtag-url ...` and `--upstream-url ...` write
# those tables (all options: `kipuka init --help`).
"""

DOGTAG_EXAMPLE = """\
# EXAMPLE, commented out and not in use: a Dogtag PKI CA. Written by
#   kipuka init DIR --dogtag-url URL --dogtag-agent-cert FILE --dogtag-agent-key FILE
#     [--dogtag-ca-bundle FILE] [--dogtag-profile ID] [--dogtag-chain FILE]
# or uncomment it and fix the URL and files. All keys: docs/dogtag.md.
# [ca.dogtag]
# type = "dogtag"
# url = "https://dogtag.example.com:8443"
# agent_cert = "dogtag/agent.pem"          # a Dogtag user in "Certificate Manager Agents"
# agent_key = "private/dogtag-agent.key"
# ca_bundle = "dogtag/ca-bundle.pem"       # trust for Dogtag's TLS certificate
# profile = "caServerCert"                 # the Dogtag profile of the labels of this CA
# approve = true                           # kipuka approves, as agent, what the profile holds
#
# [labels.corp-dogtag]
# ca = "dogtag"
"""

UPSTREAM_EXAMPLE = """\
# EXAMPLE, commented out and not in use: another EST server (kipuka, libest, EJBCA ...) as
# the CA, kipuka as its RA. Written by
#   kipuka init DIR --upstream-url URL [--upstream-label LABEL] [--upstream-ca-bundle FILE]
#     --upstream-ra-cert FILE --upstream-ra-key FILE and/or --upstream-username NAME
#     with --upstream-password-env VAR or --upstream-password-file FILE [--upstream-chain FILE]
# or uncomment it and fix the URL and files. All keys: docs/upstream-est.md.
# [ca.upstream]
# type = "est"
# url = "https://est.example.com:9443"     # the upstream; no path
# ca_bundle = "upstream/ca-bundle.pem"     # trust for the upstream's TLS certificate
# ra_cert = "upstream/ra.pem"              # the RA's TLS client certificate (id-kp-cmcRA) ...
# ra_key = "private/upstream-ra.key"
# # username = "ra-01"                     # ... and/or HTTP Basic credentials
# # password_env = "KIPUKA_UPSTREAM_PASSWORD"
#
# [labels.corp-upstream]
# ca = "upstream"
"""
