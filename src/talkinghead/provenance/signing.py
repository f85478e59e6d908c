"""C2PA manifests (Content Authenticity Initiative) through ``c2pa-python``: sign and read.

The signing certificate is the user's: ``TALKINGHEAD_C2PA_CERT`` (PEM chain, signing certificate
first) and ``TALKINGHEAD_C2PA_KEY`` (PEM private key), or the same as :class:`SigningConfig`
fields. Without one, a local certificate authority and signing certificate are generated once
into ``TALKINGHEAD_C2PA_DIR`` (default ``~/.config/talkinghead/c2pa``). Their names say "local,
unverified": a signature from them proves the file is unchanged since signing, not who signed.
Validators report them as untrusted unless told to trust the local CA
(``TALKINGHEAD_C2PA_TRUST_ANCHORS``: PEM file of extra trusted roots for ``verify``).
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from talkinghead.errors import UserError
from talkinghead.fileio import atomic_path, atomic_write_bytes

LOCAL_ORGANIZATION = "talkinghead local signer (unverified)"
ASSERTION_LABEL = "talkinghead.provenance"
# IPTC digital source type that C2PA uses for "made by a generative model".
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
_UNTRUSTED = "signingCredential.untrusted"  # expected for local and private certificates


def c2pa_available() -> bool:
    try:
        import c2pa  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class SigningConfig:
    cert_chain: Path | None = None  # PEM, signing certificate first; None: local certificate
    private_key: Path | None = None
    tsa_url: str | None = None  # RFC 3161 timestamp authority (needs network)

    @classmethod
    def from_env(cls) -> SigningConfig:
        cert, key = os.environ.get("TALKINGHEAD_C2PA_CERT"), os.environ.get("TALKINGHEAD_C2PA_KEY")
        if bool(cert) != bool(key):
            raise UserError("set both TALKINGHEAD_C2PA_CERT and TALKINGHEAD_C2PA_KEY, or neither")
        return cls(
            Path(cert) if cert else None,
            Path(key) if key else None,
            os.environ.get("TALKINGHEAD_C2PA_TSA_URL") or None,
        )


def local_credentials_dir() -> Path:
    if "TALKINGHEAD_C2PA_DIR" in os.environ:
        return Path(os.environ["TALKINGHEAD_C2PA_DIR"])
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "talkinghead" / "c2pa"


def local_credentials(folder: Path | None = None) -> tuple[bytes, bytes]:
    """(PEM chain, PEM key) of the local signer, generated on first use."""
    folder = folder or local_credentials_dir()
    chain_path, key_path = folder / "local-signer-chain.pem", folder / "local-signer-key.pem"
    if not (chain_path.is_file() and key_path.is_file()):
        chain, key = _generate_local_credentials()
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(chain_path, chain)
        with atomic_path(key_path) as tmp:
            tmp.write_bytes(key)
            tmp.chmod(0o600)
    return chain_path.read_bytes(), key_path.read_bytes()


def _generate_local_credentials() -> tuple[bytes, bytes]:
    """A P-256 CA and an end-entity signing certificate it issues (C2PA rejects self-signed
    end-entity certificates), both named as local and unverified, valid ten years."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, LOCAL_ORGANIZATION),
            ]
        )

    def usage(sign_certs: bool) -> x509.KeyUsage:
        flags = dict.fromkeys(
            ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement"),
            False,
        )
        return x509.KeyUsage(
            digital_signature=not sign_certs,
            key_cert_sign=sign_certs,
            crl_sign=sign_certs,
            encipher_only=False,
            decipher_only=False,
            **flags,
        )

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def builder(subject: str, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )

    ca_name = name("talkinghead local CA (unverified)")
    ca = (
        builder("talkinghead local CA (unverified)", ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(sign_certs=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        builder("talkinghead local signer (unverified)", ca_name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(sign_certs=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain = cert.public_bytes(pem) + ca.public_bytes(pem)
    private = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return chain, private


def _algorithm(key_pem: bytes) -> str:
    """The C2PA algorithm name matching the key type."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise UserError(f"C2PA private key: not an unencrypted PEM key ({exc})") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curves = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name in curves:
            return curves[key.curve.name]
    raise UserError(f"C2PA private key: unsupported key type {type(key).__name__}")


def _signer(config: SigningConfig):
    import c2pa

    if config.cert_chain is None:
        chain, key = local_credentials()
    else:
        try:
            chain, key = config.cert_chain.read_bytes(), config.private_key.read_bytes()
        except OSError as exc:
            raise UserError(f"C2PA certificate or key: {exc}") from None
    info = c2pa.C2paSignerInfo(_algorithm(key), chain, key, config.tsa_url)
    try:
        return c2pa.Signer.from_info(info)
    except c2pa.C2paError as exc:
        raise UserError(f"C2PA signer: {exc}") from None


def manifest_definition(record: dict, title: str) -> dict:
    """The C2PA manifest: a ``c2pa.created`` action by a generative model, and our record."""
    generator = record.get("generator", "talkinghead")
    name, _, version = generator.partition(" ")
    action = {
        "action": "c2pa.created",
        "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
        "softwareAgent": {"name": name, "version": version},
        "description": "AI-generated video of a person from photos; not real footage",
    }
    return {
        "claim_generator_info": [{"name": name, "version": version}],
        "title": title,
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [action]}},
            {"label": ASSERTION_LABEL, "data": record},
        ],
    }


def sign_file(path: Path, record: dict, config: SigningConfig | None = None) -> None:
    """Embed a signed C2PA manifest holding ``record`` into ``path`` (MP4, PNG, JPEG) in place."""
    import c2pa

    config = config or SigningConfig.from_env()
    # No thumbnail: it would add a copy of the picture to every small output.
    context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
    builder = c2pa.Builder(manifest_definition(record, path.name), context=context)
    signer = _signer(config)
    with atomic_path(path) as tmp:
        try:
            builder.sign_file(path, tmp, signer)
        except c2pa.C2paError as exc:
            raise UserError(f"{path}: C2PA signing failed ({exc})") from None


@dataclass(frozen=True)
class ManifestReport:
    """What the C2PA manifest in a file says, and whether its signature checks."""

    state: str  # c2pa's validation state: Trusted, Valid or Invalid
    signature_ok: bool  # no failure other than an untrusted (e.g. local) certificate
    trusted: bool  # the certificate chains to a trusted root
    failures: list[str] = field(default_factory=list)
    signer: str = ""
    local_certificate: bool = False
    synthetic: bool = False  # created by a generative model (digitalSourceType)
    record: dict = field(default_factory=dict)  # our assertion, when present

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _signer_name(info: dict) -> str:
    name, issuer = info.get("common_name", "?"), info.get("issuer")
    return name if not issuer or issuer in name else f"{name}, issued by {issuer}"


def read_manifest(path: Path) -> ManifestReport | None:
    """The active manifest's report, or None when the file carries no C2PA data."""
    import c2pa

    anchors = os.environ.get("TALKINGHEAD_C2PA_TRUST_ANCHORS")
    settings = {"verify": {"verify_trust": True}}
    if anchors:
        settings["trust"] = {"user_anchors": Path(anchors).read_text()}
    try:
        reader = c2pa.Reader.try_create(path, context=c2pa.Context.from_dict(settings))
    except c2pa.C2paError as exc:
        return ManifestReport("Invalid", False, False, failures=[f"unreadable manifest: {exc}"])
    if reader is None:
        return None
    with reader:
        store = json.loads(reader.json())
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    results = store.get("validation_results", {}).get("activeManifest", {})
    failures = [item["code"] for item in results.get("failure", [])]
    info = manifest.get("signature_info", {})
    assertions = {a.get("label"): a.get("data", {}) for a in manifest.get("assertions", [])}
    actions = [
        action
        for label, data in assertions.items()
        if label and label.startswith("c2pa.actions")
        for action in data.get("actions", [])
    ]
    state = store.get("validation_state", "Invalid")
    return ManifestReport(
        state=state,
        signature_ok=state in ("Valid", "Trusted") and set(failures) <= {_UNTRUSTED},
        trusted=state == "Trusted",
        failures=failures,
        signer=_signer_name(info),
        local_certificate=info.get("issuer") == LOCAL_ORGANIZATION,
        synthetic=any(a.get("digitalSourceType") == TRAINED_ALGORITHMIC_MEDIA for a in actions),
        record=assertions.get(ASSERTION_LABEL, {}),
    )
