"""A SASL (SCRAM-SHA-256/512, PLAIN) and TLS front for the Tansu dev broker, for the security tests.

Tansu 0.6.0 cannot check Kafka credentials or serve TLS itself (see docs/operations.md, "What the
dev broker cannot test"): its memory and S3 storage keep no SCRAM credentials, so every login is
refused, and its command line rejects ``--cert`` together with ``--key``. This proxy does what a
real broker does at the door, so that the real clients' security settings are exercised:

- TLS with the test CA's server certificate (optionally demanding a client certificate);
- SaslHandshake v0/v1 and SaslAuthenticate v0-v2, checked against its own users with RFC 5802 /
  RFC 7677 SCRAM (or PLAIN); anything else before a successful login closes the connection;
- after the login, bytes flow unchanged between client and broker.

Tansu must advertise the proxy's address (``--advertised-listener-url``) so that clients come
back through it for every broker connection.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import struct
import threading
from dataclasses import dataclass, field

SCRAM_HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}
ITERATIONS = 4096
API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 33, 34, 58


@dataclass
class Attempt:
    """One login attempt seen by the proxy."""

    user: str
    mechanism: str
    ok: bool
    client_id: str


@dataclass
class ProxyLog:
    attempts: list[Attempt] = field(default_factory=list)
    unauthenticated: list[tuple[int, str]] = field(default_factory=list)  # (api_key, client_id) refused

    def users(self, *, ok: bool = True) -> set[str]:
        return {a.user for a in self.attempts if a.ok is ok}

    def client_ids(self, *, ok: bool = True) -> set[str]:
        return {a.client_id for a in self.attempts if a.ok is ok}


# -- wire helpers ---------------------------------------------------------------------------------


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _put_uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@dataclass
class Request:
    api_key: int
    version: int
    correlation_id: int
    client_id: str
    body: bytes  # after the header (tagged fields skipped for flexible requests)


def parse_request(frame: bytes, *, flexible: bool) -> Request:
    api_key, version, corr, id_len = struct.unpack_from(">hhih", frame, 0)
    pos = 10
    client_id = ""
    if id_len >= 0:
        client_id = frame[pos : pos + id_len].decode("utf-8", "replace")
        pos += id_len
    if flexible:
        count, pos = _uvarint(frame, pos)
        for _ in range(count):
            _tag, pos = _uvarint(frame, pos)
            size, pos = _uvarint(frame, pos)
            pos += size
    return Request(api_key, version, corr, client_id, frame[pos:])


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def handshake_response(corr: int, error: int, mechanisms: list[str]) -> bytes:
    body = struct.pack(">ihi", corr, error, len(mechanisms))
    for m in mechanisms:
        body += struct.pack(">h", len(m)) + m.encode()
    return _frame(body)


def authenticate_response(corr: int, version: int, error: int, message: str | None, auth: bytes) -> bytes:
    if version >= 2:  # flexible: response header v1, compact types, tagged fields
        msg = b"\x00" if message is None else _put_uvarint(len(message.encode()) + 1) + message.encode()
        body = struct.pack(">i", corr) + b"\x00" + struct.pack(">h", error) + msg
        body += _put_uvarint(len(auth) + 1) + auth + struct.pack(">q", 3_600_000) + b"\x00"
        return _frame(body)
    body = struct.pack(">ih", corr, error)
    body += struct.pack(">h", -1) if message is None else struct.pack(">h", len(message.encode())) + message.encode()
    body += struct.pack(">i", len(auth)) + auth
    if version >= 1:
        body += struct.pack(">q", 3_600_000)
    return _frame(body)


# -- SCRAM (server side) -----------------------------------------------------------------------------


class Scram:
    """The server side of one SCRAM exchange (RFC 5802), for a known password."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.hash = SCRAM_HASHES[mechanism]
        self.users = users
        self.user = ""
        self.client_first_bare = ""
        self.server_first = ""
        self.nonce = ""
        self.salt = os.urandom(16)

    def first(self, message: str) -> str:
        _gs2, _authzid, bare = message.split(",", 2)
        self.client_first_bare = bare
        attrs = dict(part.split("=", 1) for part in bare.split(","))
        self.user = attrs["n"].replace("=2C", ",").replace("=3D", "=")
        self.nonce = attrs["r"] + base64.b64encode(os.urandom(18)).decode()
        self.server_first = f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={ITERATIONS}"
        return self.server_first

    def final(self, message: str) -> str | None:
        """The server-final message, or None when the proof is wrong (or the user unknown)."""
        without_proof, proof_b64 = message.rsplit(",p=", 1)
        attrs = dict(part.split("=", 1) for part in without_proof.split(","))
        password = self.users.get(self.user)
        if password is None or attrs.get("r") != self.nonce:
            return None
        salted = hashlib.pbkdf2_hmac(self.hash().name, password.encode(), self.salt, ITERATIONS)
        client_key = hmac.new(salted, b"Client Key", self.hash).digest()
        stored_key = self.hash(client_key).digest()
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, self.hash).digest()
        proof = base64.b64decode(proof_b64)
        recovered = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(self.hash(recovered).digest(), stored_key):
            return None
        server_key = hmac.new(salted, b"Server Key", self.hash).digest()
        return "v=" + base64.b64encode(hmac.new(server_key, auth_message, self.hash).digest()).decode()


# -- the proxy -----------------------------------------------------------------------------------------


class KafkaSecurityProxy:
    """Listen on ``host:port`` (TLS when ``server_ssl``), log clients in, then forward to the broker.

    With ``port`` 0 the OS picks a free port when it starts; ``port`` then says which.
    """

    def __init__(
        self,
        broker: tuple[str, int],
        port: int,
        *,
        users: dict[str, str] | None = None,
        mechanisms: tuple[str, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"),
        server_ssl: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.broker = broker
        self.host = host
        self.port = port
        self.users = users
        self.mechanisms = mechanisms
        self.server_ssl = server_ssl
        self.log = ProxyLog()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kafka-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> KafkaSecurityProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, ssl=self.server_ssl)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.broker)
        except OSError:
            writer.close()
            return
        try:
            if self.users is not None and not await self._login(reader, writer, up_reader, up_writer):
                return
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away
        finally:
            for w in (writer, up_writer):
                w.close()

    async def _login(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        assert self.users is not None
        mechanism: str | None = None
        scram: Scram | None = None
        while True:
            size = struct.unpack(">i", await reader.readexactly(4))[0]
            frame = await reader.readexactly(size)
            api_key, version = struct.unpack_from(">hh", frame, 0)
            req = parse_request(frame, flexible=api_key == SASL_AUTHENTICATE and version >= 2)
            if api_key == API_VERSIONS:  # the broker answers (it lists the SASL APIs)
                up_writer.write(_frame(frame))
                await up_writer.drain()
                size = struct.unpack(">i", await up_reader.readexactly(4))[0]
                writer.write(_frame(await up_reader.readexactly(size)))
                await writer.drain()
            elif api_key == SASL_HANDSHAKE:
                (length,) = struct.unpack_from(">h", req.body, 0)
                wanted = req.body[2 : 2 + length].decode()
                ok = wanted in self.mechanisms
                mechanism = wanted if ok else None
                scram = Scram(wanted, self.users) if ok and wanted in SCRAM_HASHES else None
                writer.write(
                    handshake_response(
                        req.correlation_id, 0 if ok else UNSUPPORTED_SASL_MECHANISM, list(self.mechanisms)
                    )
                )
                await writer.drain()
                if not ok:
                    return False
            elif api_key == SASL_AUTHENTICATE and mechanism is not None:
                if version >= 2:
                    length, pos = _uvarint(req.body, 0)
                    auth = req.body[pos : pos + length - 1]
                else:
                    (length,) = struct.unpack_from(">i", req.body, 0)
                    auth = req.body[4 : 4 + length]
                if mechanism == "PLAIN":
                    _authz, user, password = auth.decode().split("\x00")
                    ok = self.users.get(user) == password
                    self._answer(writer, req, ok, b"", Attempt(user, mechanism, ok, req.client_id))
                    await writer.drain()
                    return ok
                assert scram is not None
                if not scram.client_first_bare:
                    writer.write(
                        authenticate_response(req.correlation_id, version, 0, None, scram.first(auth.decode()).encode())
                    )
                    await writer.drain()
                    continue
                final = scram.final(auth.decode())
                self._answer(
                    writer,
                    req,
                    final is not None,
                    (final or "").encode(),
                    Attempt(scram.user, mechanism, final is not None, req.client_id),
                )
                await writer.drain()
                return final is not None
            else:  # anything else before a login is refused, as a SASL listener does
                self.log.unauthenticated.append((api_key, req.client_id))
                return False

    def _answer(self, writer: asyncio.StreamWriter, req: Request, ok: bool, auth: bytes, attempt: Attempt) -> None:
        self.log.attempts.append(attempt)
        error = 0 if ok else SASL_AUTHENTICATION_FAILED
        message = None if ok else f"Authentication failed for user {attempt.user}"
        writer.write(authenticate_response(req.correlation_id, req.version, error, message, auth))


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    finally:
        writer.close()
