"""Test certificates made with the ``openssl`` command line (no Python crypto library).

``make_pki(dir)`` writes a CA and certificates signed by it, plus the bad ones the TLS tests
need: expired and not-yet-valid (``openssl ca -startdate/-enddate``), for the wrong host, and
from an untrusted CA.
"""

import subprocess
from pathlib import Path

_CA_CONF = """
[ ca ]
default_ca = CA_default
[ CA_default ]
database = {db}/index.txt
new_certs_dir = {db}
serial = {db}/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = copy
[ policy_any ]
commonName = supplied
"""


def _run(*argv: str) -> None:
    proc = subprocess.run(["openssl", *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(argv)} failed: {proc.stderr}")


class Authority:
    """A self-signed CA that signs leaf certificates with ``openssl ca``."""

    def __init__(self, directory: Path, name: str):
        self.dir = directory
        self.name = name
        self.cert = directory / f"{name}.pem"
        self.key = directory / f"{name}.key"
        db = directory / f"{name}-db"
        db.mkdir(parents=True, exist_ok=True)
        (db / "index.txt").write_text("")
        (db / "serial").write_text("1000\n")
        self.conf = directory / f"{name}.cnf"
        self.conf.write_text(_CA_CONF.format(db=db))
        _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(self.key), "-out", str(self.cert), "-days", "30", "-subj", f"/CN={name}")

    def issue(self, name: str, cn: str, san: str = "", usage: str = "serverAuth",
              start: str = "", end: str = "") -> "Leaf":
        """A key and certificate; ``start``/``end`` are ``YYYYMMDDHHMMSSZ`` (default: now, +30 days)."""
        key = self.dir / f"{name}.key"
        csr = self.dir / f"{name}.csr"
        cert = self.dir / f"{name}.pem"
        req = ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
               "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}",
               "-addext", f"extendedKeyUsage={usage}", "-addext", "basicConstraints=critical,CA:FALSE"]
        if san:
            req += ["-addext", f"subjectAltName={san}"]
        _run(*req)
        sign = ["ca", "-batch", "-notext", "-config", str(self.conf), "-cert", str(self.cert),
                "-keyfile", str(self.key), "-in", str(csr), "-out", str(cert)]
        sign += ["-startdate", start] if start else []
        sign += ["-enddate", end] if end else ["-days", "30"]
        _run(*sign)
        return Leaf(cert, key)


class Leaf:
    def __init__(self, cert: Path, key: Path):
        self.cert = cert
        self.key = key

    def read(self):
        """(certificate chain PEM, key PEM) as bytes, for grpcio."""
        return self.cert.read_bytes(), self.key.read_bytes()


class PKI:
    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        local = "DNS:localhost,IP:127.0.0.1"
        self.dir = directory
        self.ca = Authority(directory, "ca")
        self.server = self.ca.issue("server", "localhost", local)
        self.server2 = self.ca.issue("server2", "localhost", local)
        self.client = self.ca.issue("client", "client", usage="clientAuth")
        self.expired = self.ca.issue("expired", "localhost", local,
                                     start="20000101000000Z", end="20010101000000Z")
        self.not_yet_valid = self.ca.issue("notyet", "localhost", local,
                                           start="20990101000000Z", end="21000101000000Z")
        self.wrong_host = self.ca.issue("wronghost", "wrong.example", "DNS:wrong.example")
        self.other_ca = Authority(directory, "other-ca")
        self.untrusted = self.other_ca.issue("untrusted", "localhost", local)
        self.untrusted_client = self.other_ca.issue("untrusted-client", "client", usage="clientAuth")

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert.read_bytes()
