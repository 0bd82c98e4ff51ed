"""
TLS for both sides of the proxy, built once from the configuration.

PostgreSQL's TLS starts inside an open connection: the client sends an
SSLRequest, the server answers C{S}, and the handshake follows on the same
socket.  So neither side uses C{ssl:} endpoints: the client side calls
C{transport.startTLS} with L{ProxyTLS.server} after answering C{S}, and a
backend connection calls it with L{ProxyTLS.client} once the server said
C{S} to the proxy's own SSLRequest.

As in Pgpool-II, one C{ssl} switch covers both sides.  C{ssl_key},
C{ssl_cert}, C{ssl_ciphers}, C{ssl_prefer_server_ciphers},
C{ssl_ecdh_curve} and C{ssl_dh_params_file} shape what clients are offered;
C{ssl_ca_cert} and C{ssl_ca_cert_dir} are the authorities the backends'
certificates must chain to (no host name check, like libpq's
C{sslmode=verify-ca}); without them a backend's certificate is not checked
(like C{sslmode=require}).

The same authorities check client certificates, as PostgreSQL's
C{ssl_ca_file} does: with them, clients are asked for a certificate during
the handshake, a presented certificate that does not chain to them (or that
C{ssl_crl_file} revokes) fails the handshake, and a client without one is
let through, so that pool_hba.conf decides (its C{cert} method and
C{clientcert} option require one).  Without them, clients are not asked.

Every file is read and every setting checked here, so a mistake is reported
at start-up as a L{TLSSettingError} naming the setting, never later as a
failed handshake.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import attr
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL
from OpenSSL.crypto import X509, PKey, X509StoreFlags
from twisted.internet.ssl import (
    AcceptableCiphers,
    Certificate,
    CertificateOptions,
    DiffieHellmanParameters,
    trustRootFromCertificates,
)
from twisted.python.filepath import FilePath

from twisted_pgpool.config import SettingError, register_check

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.config import PgpoolConfig

#: The ALPN protocol name PostgreSQL 17 registered.  Clients built with
#: libpq 17 offer it, and Twisted's ALPN selection fails the handshake when
#: nothing offered is acceptable, so both sides name it.
ALPN_POSTGRESQL = b"postgresql"

__all__ = [
    "ALPN_POSTGRESQL",
    "ProxyTLS",
    "TLSSettingError",
    "backend_options",
    "frontend_options",
    "openssl_reason",
    "proxy_tls",
]


class TLSSettingError(SettingError):
    """
    A TLS setting cannot be used.

    @ivar key: the configuration key at fault (C{ssl_key}, C{ssl_ciphers}...).
    @ivar reason: what is wrong, readable on its own.
    """


@attr.s(auto_attribs=True, frozen=True, eq=False)
class ProxyTLS:
    """
    The proxy's TLS, for each side.

    @ivar server: what C{startTLS} gets on a client connection.
    @ivar client: what C{startTLS} gets on a backend connection.
    @ivar verifies_backends: whether backends' certificates are checked
        against C{ssl_ca_cert}/C{ssl_ca_cert_dir}.
    @ivar verifies_clients: whether clients are asked for a certificate,
        checked against the same authorities: any certificate a client
        connection then has was verified during the handshake.
    """

    server: CertificateOptions
    client: CertificateOptions
    verifies_backends: bool
    verifies_clients: bool = False


def proxy_tls(config: "PgpoolConfig") -> Optional[ProxyTLS]:
    """
    Build both sides' TLS from a configuration.

    @return: L{None} when C{ssl} is off.
    @raise TLSSettingError: a file cannot be read or used, or a setting is
        not something this OpenSSL accepts.
    """
    if not config.ssl:
        return None
    server = frontend_options(
        key_file=config.ssl_key,
        cert_file=config.ssl_cert,
        ciphers=config.ssl_ciphers,
        prefer_server_ciphers=config.ssl_prefer_server_ciphers,
        ecdh_curve=config.ssl_ecdh_curve,
        dh_params_file=config.ssl_dh_params_file,
        ca_file=config.ssl_ca_cert,
        ca_dir=config.ssl_ca_cert_dir,
        crl_file=config.ssl_crl_file,
    )
    client = backend_options(config.ssl_ca_cert, config.ssl_ca_cert_dir)
    verifies = bool(config.ssl_ca_cert or config.ssl_ca_cert_dir)
    return ProxyTLS(server, client, verifies_backends=verifies, verifies_clients=verifies)


def frontend_options(
    key_file: str,
    cert_file: str,
    ciphers: str,
    prefer_server_ciphers: bool,
    ecdh_curve: str,
    dh_params_file: str,
    ca_file: str = "",
    ca_dir: str = "",
    crl_file: str = "",
) -> CertificateOptions:
    """
    The server side of client connections.

    @param key_file: PEM private key, not encrypted.
    @param cert_file: PEM certificate, optionally followed by the
        intermediate certificates of its chain (as
        C{SSL_CTX_use_certificate_chain_file} reads it).
    @param ciphers: an OpenSSL cipher string (TLS 1.2 and older; TLS 1.3
        suites are OpenSSL's defaults).
    @param prefer_server_ciphers: use the server's cipher order rather than
        the client's.
    @param ecdh_curve: the curve for ECDH key exchange, by OpenSSL name.
    @param dh_params_file: PEM Diffie-Hellman parameters, or C{''}.
    @param ca_file: PEM file of the authorities client certificates must
        chain to, or C{''}.
    @param ca_dir: a directory of such files, or C{''}.  With neither,
        clients are not asked for a certificate.
    @param crl_file: PEM (or DER) certificate revocation lists of those
        authorities, or C{''}: a client certificate they revoke fails the
        handshake.  Every authority of a presented chain must then have a
        list in the file (OpenSSL's C{CRL_CHECK_ALL}, as PostgreSQL sets).
    @raise TLSSettingError: naming the setting at fault.
    """
    certificates = _read_certificates("ssl_cert", cert_file)
    authorities = _read_authorities(ca_file, ca_dir)
    revocations: List[x509.CertificateRevocationList] = []
    if crl_file:
        if not authorities:
            raise TLSSettingError(
                "ssl_crl_file",
                "client certificates are only checked "
                "against ssl_ca_cert or ssl_ca_cert_dir; set one of them",
            )
        revocations = _read_crls(crl_file)
    key = _read_private_key(key_file)
    curve = _ecdh_curve(ecdh_curve)
    dh_parameters = None
    if dh_params_file:
        _check_dh_params(dh_params_file)
        dh_parameters = DiffieHellmanParameters.fromFile(FilePath(dh_params_file))
    try:
        acceptable = AcceptableCiphers.fromOpenSSLCipherString(ciphers)
    except (SSL.Error, UnicodeError) as e:
        raise TLSSettingError(
            "ssl_ciphers", f"invalid cipher string {ciphers!r}: {openssl_reason(e)}"
        )
    client_checks: Dict[str, Any] = {}
    if authorities:
        # Ask for a certificate and verify one if given, but admit a
        # client without one (Twisted's trustRoot always requires one).
        client_checks = dict(
            verify=True,
            requireCertificate=False,
            caCerts=[X509.from_cryptography(c) for c in authorities],
        )
    try:
        options = CertificateOptions(
            privateKey=PKey.from_cryptography_key(key),
            certificate=X509.from_cryptography(certificates[0]),
            extraCertChain=[X509.from_cryptography(c) for c in certificates[1:]],
            acceptableCiphers=acceptable,
            dhParameters=dh_parameters,
            acceptableProtocols=[ALPN_POSTGRESQL],
            **client_checks,
        )
    except ValueError:
        raise TLSSettingError("ssl_ciphers", f"{ciphers!r} selects no cipher this OpenSSL offers")
    if not prefer_server_ciphers:
        # Twisted always sets OP_CIPHER_SERVER_PREFERENCE and has no public
        # way to clear it; the context is built from these flags below.
        options._options &= ~SSL.OP_CIPHER_SERVER_PREFERENCE
    try:
        # Built (and cached by the options) now, so a key that does not
        # belong to the certificate is reported at start-up.
        context = options.getContext()
    except SSL.Error as e:
        raise TLSSettingError(
            "ssl_key",
            f"the private key in {key_file} does not match the "
            f"certificate in {cert_file} ({openssl_reason(e)})",
        )
    try:
        context.set_tmp_ecdh(curve)
    except SSL.Error as e:
        raise TLSSettingError(
            "ssl_ecdh_curve",
            f"curve {ecdh_curve!r} cannot be used for key exchange: {openssl_reason(e)}",
        )
    if authorities:
        # Name the acceptable authorities in the CertificateRequest, as
        # PostgreSQL does, so a client with several certificates can pick.
        context.set_client_ca_list([X509.from_cryptography(c).get_subject() for c in authorities])
    if revocations:
        store = context.get_cert_store()
        assert store is not None  # a context always has one
        for revocation in revocations:
            store.add_crl(revocation)
        store.set_flags(X509StoreFlags.CRL_CHECK | X509StoreFlags.CRL_CHECK_ALL)
    return options


def backend_options(ca_file: str, ca_dir: str) -> CertificateOptions:
    """
    The client side of backend connections.

    @param ca_file: PEM file of trusted authorities, or C{''}.
    @param ca_dir: a directory of PEM files of trusted authorities (every
        certificate in every readable file counts; OpenSSL's hashed names
        are not needed), or C{''}.
    @return: options that check the server's certificate chain against the
        authorities when there are any, and accept any certificate
        otherwise (the connection is encrypted but the server unverified).
    @raise TLSSettingError: naming the setting at fault.
    """
    authorities = _read_authorities(ca_file, ca_dir)
    if not authorities:
        return CertificateOptions(acceptableProtocols=[ALPN_POSTGRESQL])
    trusted = trustRootFromCertificates(
        [Certificate(X509.from_cryptography(c)) for c in authorities]
    )
    return CertificateOptions(trustRoot=trusted, acceptableProtocols=[ALPN_POSTGRESQL])


# -- reading files -----------------------------------------------------------


def _read(key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSSettingError(key, f"cannot read {path}: {e.strerror or e}")


def _read_certificates(key: str, path: str) -> List[x509.Certificate]:
    data = _read(key, path)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise TLSSettingError(key, f"{path} holds no PEM certificate ({e})")
    return certificates


def _read_authorities(ca_file: str, ca_dir: str) -> List[x509.Certificate]:
    authorities: List[x509.Certificate] = []
    if ca_file:
        authorities.extend(_read_certificates("ssl_ca_cert", ca_file))
    if ca_dir:
        authorities.extend(_read_certificate_dir(ca_dir))
    return authorities


_PEM_CRL_BEGIN = b"-----BEGIN X509 CRL-----"
_PEM_CRL_END = b"-----END X509 CRL-----"


def _read_crls(path: str) -> List[x509.CertificateRevocationList]:
    """
    Read C{ssl_crl_file}: one or more PEM CRLs (as C{X509_STORE_load_locations}
    reads them), or one DER CRL.
    """
    data = _read("ssl_crl_file", path)
    try:
        if _PEM_CRL_BEGIN not in data:
            return [x509.load_der_x509_crl(data)]
        return [
            x509.load_pem_x509_crl(block[block.index(_PEM_CRL_BEGIN) :] + _PEM_CRL_END)
            for block in data.split(_PEM_CRL_END)
            if _PEM_CRL_BEGIN in block
        ]
    except ValueError as e:
        raise TLSSettingError(
            "ssl_crl_file", f"{path} holds no usable certificate revocation list ({e})"
        )


def _read_certificate_dir(path: str) -> List[x509.Certificate]:
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        raise TLSSettingError("ssl_ca_cert_dir", f"cannot list {path}: {e.strerror or e}")
    found: List[x509.Certificate] = []
    seen = set()
    for name in names:
        file_path = os.path.join(path, name)
        if not os.path.isfile(file_path):
            continue
        try:
            with open(file_path, "rb") as f:
                certificates = x509.load_pem_x509_certificates(f.read())
        except (OSError, ValueError):
            # Hashed directories also hold CRLs and other files.
            continue
        for certificate in certificates:
            der = certificate.public_bytes(serialization.Encoding.DER)
            if der not in seen:
                seen.add(der)
                found.append(certificate)
    if not found:
        raise TLSSettingError("ssl_ca_cert_dir", f"{path} holds no PEM certificate")
    return found


def _read_private_key(path: str):
    data = _read("ssl_key", path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSSettingError(
            "ssl_key",
            f"{path} is encrypted with a passphrase; give an "
            "unencrypted key (ssl_passphrase_command is not supported)",
        )
    except (ValueError, UnsupportedAlgorithm) as e:
        raise TLSSettingError("ssl_key", f"{path} holds no usable PEM private key ({e})")


def _check_dh_params(path: str) -> None:
    _read("ssl_dh_params_file", path)
    try:
        SSL.Context(SSL.TLS_METHOD).load_tmp_dh(path)
    except SSL.Error as e:
        raise TLSSettingError(
            "ssl_dh_params_file",
            f"{path} holds no PEM Diffie-Hellman parameters ({openssl_reason(e)})",
        )


#: OpenSSL's other names for curves cryptography knows by their SEC name.
_CURVE_ALIASES = {"prime256v1": "secp256r1", "prime192v1": "secp192r1"}


def _ecdh_curve(name: str) -> ec.EllipticCurve:
    wanted = _CURVE_ALIASES.get(name.strip().lower(), name.strip())
    # The curve classes cryptography offers, by their (class-level) name.
    known: Dict[str, Any] = {
        str(value.name): value
        for value in vars(ec).values()
        if isinstance(value, type)
        and issubclass(value, ec.EllipticCurve)
        and value is not ec.EllipticCurve
    }
    for curve_name, curve in known.items():
        if curve_name.lower() == wanted.lower():
            return curve()
    names = sorted(["prime256v1", *known])
    raise TLSSettingError(
        "ssl_ecdh_curve", f"unknown curve {name!r}; expected one of " + ", ".join(names)
    )


def openssl_reason(error: Exception) -> str:
    """
    The last reason string of a pyOpenSSL error list, or the error itself.
    """
    args = getattr(error, "args", ())
    if args and isinstance(args[0], list) and args[0]:
        entry = args[0][-1]
        if isinstance(entry, tuple) and entry:
            return str(entry[-1])
    return str(error) or error.__class__.__name__


# With ssl on, the loader reads the key, certificates and parameter files
# and tries every setting on OpenSSL: a mistake found at the first client's
# handshake would leave the proxy running but unusable over TLS.
register_check("ssl", proxy_tls, TLSSettingError)
