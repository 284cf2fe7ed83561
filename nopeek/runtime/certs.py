"""Certificates for trying the gRPC transport: a job CA and one certificate per party role.

``nopeek certs --parties client,server --out certs/`` writes ``ca.pem`` (the job's CA
certificate, which every party gets), ``ca.key`` (the CA's key: keep it off the parties' hosts),
and for each role ``<role>.pem`` and ``<role>.key``: an EC P-256 key and a certificate signed by
the CA whose subject common name and DNS subject alternative name are the role. The gRPC channel
binds a party's role to that name (:mod:`nopeek.runtime.grpc_channel`). Production users bring
their own PKI: any CA works, as long as each party's certificate names its role (CN and a DNS
SAN) and chains to the CA certificate the parties are given.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import TYPE_CHECKING

from nopeek.errors import ConfigError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

ROLE = re.compile(r"^(server|client\d*)$")


def _crypto() -> None:
    """cryptography is optional (the deploy extra): without it, one line saying how to get it."""
    try:
        import cryptography  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigError(
            "making certificates needs cryptography; install it with pip install 'nopeek[deploy]'"
        ) from None


def _name(common_name: str) -> x509.Name:
    _crypto()
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    _crypto()
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(
    subject: str,
    issuer: str,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    days: int,
    san: bool,
) -> bytes:
    _crypto()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
        )
    cert = builder.sign(signer, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def make_certs(
    out: str | Path, parties: list[str], *, job: str = "nopeek-job", days: int = 30
) -> list[Path]:
    """Write a CA (``ca.pem``, ``ca.key``) and ``<role>.pem``/``<role>.key`` for each of
    ``parties`` into ``out``; returns the paths written. Keys are written readable by the owner
    only.

    >>> import tempfile
    >>> sorted(p.name for p in make_certs(tempfile.mkdtemp(), ["client", "server"]))
    ['ca.key', 'ca.pem', 'client.key', 'client.pem', 'server.key', 'server.pem']
    """
    _crypto()
    from cryptography.hazmat.primitives.asymmetric import ec

    bad = [p for p in parties if not ROLE.match(p)]
    if bad or not parties:
        raise ConfigError(
            f"--parties must name roles like server, client, client0, client1; got {bad or parties}"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    files = {"ca.key": _pem_key(ca_key)}
    files["ca.pem"] = _certificate(job, job, ca_key, ca_key, ca=True, days=days, san=False)
    for role in parties:
        key = ec.generate_private_key(ec.SECP256R1())
        files[f"{role}.key"] = _pem_key(key)
        files[f"{role}.pem"] = _certificate(role, job, key, ca_key, ca=False, days=days, san=True)
    written: list[Path] = []
    for name, data in files.items():
        path = out / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o600 if name.endswith(".key") else 0o644)
        tmp.replace(path)
        written.append(path)
    return written


def common_name(pem: bytes) -> str:
    """The subject common name of a PEM certificate (the role it names)."""
    _crypto()
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise ConfigError("--cert is not a PEM certificate; pass the role's .pem file") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ConfigError("--cert names no role (no subject common name)")
    return str(names[0].value)
