"""The security tests' harness: a throw-away CA (openssl) and Tansu behind the SASL/TLS proxy."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kafka_proxy import KafkaSecurityProxy

from streams.broker import api_versions_ok, free_port, tansu_binary

USERS = {"cityops": "s3cr3t-Pa55word-for-tests", "reader": "another-secret"}


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throw-away CA, a broker certificate and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_name_cert: Path  # a broker certificate for broker.test only (no 127.0.0.1)
    other_name_key: Path

    def server_context(self, *, other_name: bool = False, client_certs: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if other_name:
            context.load_cert_chain(self.other_name_cert, self.other_name_key)
        else:
            context.load_cert_chain(self.server_cert, self.server_key)
        if client_certs:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.ca)
        return context


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _signed(cwd: Path, name: str, subject: str, san: str) -> None:
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
        cwd=cwd,
    )
    (cwd / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        cwd=cwd,
    )


def make_tls_files(d: Path) -> TlsFiles:
    """Make the CA and the certificates in ``d``."""
    assert shutil.which("openssl"), "openssl (Debian's openssl package) makes the test CA"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=cityops-test-ca",
        cwd=d,
    )
    _signed(d, "broker", "/CN=localhost", "DNS:localhost,IP:127.0.0.1")
    _signed(d, "client", "/CN=cityops-client", "DNS:cityops-client")
    _signed(d, "other", "/CN=broker.test", "DNS:broker.test")
    return TlsFiles(
        d / "ca.pem",
        d / "broker.pem",
        d / "broker.key",
        d / "client.pem",
        d / "client.key",
        d / "other.pem",
        d / "other.key",
    )


class SecureBroker:
    """Tansu on a hidden port, advertising the proxy's port; clients only ever talk to the proxy."""

    def __init__(self, log: Path, **proxy_options: object) -> None:
        self.backend_port = free_port()
        # the proxy listens first, on a port the OS picks (no window for another process to take it);
        # it connects to the broker per client, so the broker may start after it
        self.proxy = KafkaSecurityProxy(("127.0.0.1", self.backend_port), 0, **proxy_options)  # type: ignore[arg-type]
        self.proxy.start()
        url = f"tcp://127.0.0.1:{self.proxy.port}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{self.backend_port}",
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "RUST_LOG": "warn"}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        for _ in range(300):
            if api_versions_ok("127.0.0.1", self.backend_port):
                break
            assert self.proc.poll() is None, "tansu exited"
            time.sleep(0.05)

    @property
    def bootstrap(self) -> str:
        return self.proxy.bootstrap

    def stop(self) -> None:
        self.proxy.stop()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
