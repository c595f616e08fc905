"""The local cluster's PKI: one CA, the certificates each component presents, a SA key pair.

`certificate_specs()` is the pure description (unit-tested: SANs, groups);
`ensure_pki()` makes the files with openssl and remakes all of them when the
description changes, so components never mix certificates of two CAs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from batcomputer_dev import cluster_config as cfg
from batcomputer_dev.cluster_shell import run, say

CA_SUBJECT = "/CN=batcomputer-local-ca"
VALID_DAYS = 3650
STAMP_FILE = "pki-recipe.sha256"


@dataclass(frozen=True)
class CertificateSpec:
    name: str
    common_name: str
    organization: str | None
    usage: str  # "server", "client" or "server,client"
    ip_sans: tuple[str, ...] = ()
    dns_sans: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        organization = f"/O={self.organization}" if self.organization else ""
        return f"{organization}/CN={self.common_name}"

    def extensions(self) -> str:
        usages = {"server": "serverAuth", "client": "clientAuth"}
        lines = [
            "basicConstraints = critical, CA:FALSE",
            "keyUsage = critical, digitalSignature, keyEncipherment",
            "extendedKeyUsage = " + ", ".join(usages[u] for u in self.usage.split(",")),
        ]
        sans = [f"IP:{ip}" for ip in self.ip_sans] + [f"DNS:{dns}" for dns in self.dns_sans]
        if sans:
            lines.append("subjectAltName = " + ", ".join(sans))
        return "\n".join(lines) + "\n"


def certificate_specs() -> tuple[CertificateSpec, ...]:
    node = f"system:node:{cfg.NODE_NAME}"
    return (
        CertificateSpec(
            "apiserver",
            "kube-apiserver",
            None,
            "server",
            ip_sans=("127.0.0.1", cfg.API_SERVICE_IP, cfg.BRIDGE_IP),
            dns_sans=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
        ),
        CertificateSpec(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters", "client"
        ),
        CertificateSpec("admin", "batcomputer-admin", "system:masters", "client"),
        CertificateSpec("controller-manager", "system:kube-controller-manager", None, "client"),
        CertificateSpec("scheduler", "system:kube-scheduler", None, "client"),
        CertificateSpec("kube-proxy", "system:kube-proxy", None, "client"),
        CertificateSpec("kubelet-client", node, "system:nodes", "client"),
        CertificateSpec(
            "kubelet-serving",
            cfg.NODE_NAME,
            None,
            "server",
            ip_sans=(cfg.BRIDGE_IP, "127.0.0.1"),
            dns_sans=(cfg.NODE_NAME,),
        ),
    )


def pki_recipe_digest() -> str:
    recipe = {
        "ca": CA_SUBJECT,
        "days": VALID_DAYS,
        "certs": [asdict(spec) for spec in certificate_specs()],
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def pki_complete(pki: Path) -> bool:
    stamp = pki / STAMP_FILE
    expected = ["ca.crt", "ca.key", "sa.key", "sa.pub"] + [
        f"{spec.name}.{suffix}" for spec in certificate_specs() for suffix in ("crt", "key")
    ]
    return (
        stamp.is_file()
        and stamp.read_text().strip() == pki_recipe_digest()
        and all((pki / name).is_file() for name in expected)
    )


def ensure_pki(pki: Path) -> bool:
    """Make the PKI when missing or outdated; True when new files were made."""
    if pki_complete(pki):
        return False
    say(f"generating PKI in {pki}")
    for old in pki.glob("*"):
        old.unlink()
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    run(["openssl", "genrsa", "-out", pki / "ca.key", "2048"])
    run(
        [
            "openssl", "req", "-x509", "-new", "-key", pki / "ca.key", "-subj", CA_SUBJECT,
            "-days", str(VALID_DAYS), "-sha256", "-out", pki / "ca.crt",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ]
    )  # fmt: skip
    for spec in certificate_specs():
        issue(pki, spec)
    run(["openssl", "genrsa", "-out", pki / "sa.key", "2048"])
    run(["openssl", "rsa", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub"])
    (pki / STAMP_FILE).write_text(pki_recipe_digest() + "\n")
    return True


def issue(pki: Path, spec: CertificateSpec) -> None:
    key, csr, crt = (pki / f"{spec.name}.{suffix}" for suffix in ("key", "csr", "crt"))
    extensions = pki / f"{spec.name}.ext"
    extensions.write_text(spec.extensions())
    run(["openssl", "genrsa", "-out", key, "2048"])
    run(["openssl", "req", "-new", "-key", key, "-subj", spec.subject, "-out", csr])
    run(
        [
            "openssl", "x509", "-req", "-in", csr, "-CA", pki / "ca.crt", "-CAkey", pki / "ca.key",
            "-CAcreateserial", "-days", str(VALID_DAYS), "-sha256", "-extfile", extensions,
            "-out", crt,
        ]
    )  # fmt: skip
    csr.unlink()
    extensions.unlink()
