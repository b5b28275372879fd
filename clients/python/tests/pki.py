"""Certificates made in the test itself: a CA, a server certificate for
localhost, and client certificates naming a tenant by URI SAN or CN."""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class Pki:
    def __init__(self):
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = _name("python test CA")
        self.ca_pem = self._issue(self._name, self._key.public_key(), ca=True).public_bytes(serialization.Encoding.PEM)

    def _issue(self, subject, public_key, ca=False, sans=(), usage=None):
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return builder.sign(self._key, hashes.SHA256())

    def leaf(self, common_name: str, sans=(), usage=ExtendedKeyUsageOID.CLIENT_AUTH):
        """(certificate PEM, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self._issue(_name(common_name), key.public_key(), sans=sans, usage=usage)
        return certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    def server(self):
        return self.leaf("localhost", [x509.DNSName("localhost")], ExtendedKeyUsageOID.SERVER_AUTH)

    def client(self, common_name: str, uri: str = ""):
        return self.leaf(common_name, [x509.UniformResourceIdentifier(uri)] if uri else ())
