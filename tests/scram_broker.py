"""A small fake Kafka broker that only authenticates: TLS (test certificates made with the
openssl CLI) and SASL SCRAM-SHA-512 (RFC 5802 / RFC 7677 server side), then answers Metadata.

It exists because the local Tansu broker can do neither TLS nor SASL (docs/deployment.md), and
kafka-python accepts any security settings until it connects. With it kafka-python's real
client code does its real TLS and SCRAM handshakes, so the settings -> client arguments path
is tested; it is a fake, so the tests using it are unit tests, never end to end.
Messages are encoded with kafka-python's own protocol classes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import os
import socket
import ssl
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

from kafka.protocol.api_header import RequestHeader
from kafka.protocol.metadata import ApiVersionsResponse, MetadataResponse
from kafka.protocol.sasl import (
    SaslAuthenticateRequest,
    SaslAuthenticateResponse,
    SaslHandshakeRequest,
    SaslHandshakeResponse,
)

MECHANISM = "SCRAM-SHA-512"
API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE, METADATA = 18, 17, 36, 3
# the versions offered; Metadata up to 8 keeps its encoding non-flexible
OFFERED = {API_VERSIONS: (0, 3), SASL_HANDSHAKE: (0, 1), SASL_AUTHENTICATE: (0, 2), METADATA: (0, 8)}
RESPONSES: dict[int, Any] = {
    SASL_HANDSHAKE: SaslHandshakeResponse, SASL_AUTHENTICATE: SaslAuthenticateResponse, METADATA: MetadataResponse,
}  # fmt: skip
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58


def make_certs(d: Path, hosts: str = "IP:127.0.0.1,DNS:localhost") -> dict[str, Path]:
    """A test CA and a broker certificate it signed (subjectAltName `hosts`), plus a second CA
    that signed nothing here; PEM files in `d`."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                "-days", "2", "-subj", f"/CN=sandmeter test {ca}")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
            "-subj", "/CN=broker")  # fmt: skip
    (d / "ext.cnf").write_text(f"subjectAltName={hosts}\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "broker.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return {"ca": d / "ca.pem", "other_ca": d / "other-ca.pem", "cert": d / "broker.pem", "key": d / "broker.key"}


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha512).digest()


class _Credential:
    """What a broker keeps of a SCRAM user: salt, iterations, stored key and server key."""

    def __init__(self, password: str, iterations: int = 4096) -> None:
        self.salt, self.iterations = os.urandom(16), iterations
        salted = hashlib.pbkdf2_hmac("sha512", password.encode(), self.salt, iterations)
        self.stored_key = hashlib.sha512(_hmac(salted, b"Client Key")).digest()
        self.server_key = _hmac(salted, b"Server Key")


class FakeScramBroker:
    """Listens on 127.0.0.1 (TLS when cert and key are given) until closed. `events` records
    handshakes, logins and refusals for the tests to assert on."""

    def __init__(self, users: dict[str, str], cert: Path, key: Path, topic: str = "sandmeter.test") -> None:
        self.users = {name: _Credential(pw) for name, pw in users.items()}
        self.topic = topic
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.events: list[str] = []
        threading.Thread(target=self._accept, name="fake-broker", daemon=True).start()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.events.append(f"tls refused: {type(exc).__name__}")
            raw.close()
            return
        session: dict[str, Any] = {"user": None, "authenticated": False, "step": 0}
        with contextlib.closing(conn), contextlib.suppress(ConnectionError, OSError, struct.error):
            while True:
                body = _read(conn, struct.unpack(">i", _read(conn, 4))[0])
                api_key, version = struct.unpack(">hh", body[:4])
                flexible = api_key in RESPONSES and RESPONSES[api_key].flexible_version_q(version)
                buf = io.BytesIO(body)
                header = RequestHeader.decode(buf, flexible=flexible)
                response = self._answer(api_key, version, body[buf.tell() :], session)
                if response is None:  # anything else before a login: hang up, as a broker does
                    self.events.append(f"refused api {api_key} before authentication")
                    return
                response.with_header(correlation_id=header.correlation_id)
                conn.sendall(response.encode(header=True, framed=True))

    def _answer(self, api_key: int, version: int, payload: bytes, session: dict[str, Any]) -> Any:
        if api_key == API_VERSIONS:
            offered = [ApiVersionsResponse.ApiVersion(api_key=k, min_version=lo, max_version=hi)
                       for k, (lo, hi) in OFFERED.items()]  # fmt: skip
            return ApiVersionsResponse(version=version, error_code=0, api_keys=offered, throttle_time_ms=0)
        if api_key == SASL_HANDSHAKE:
            mechanism = SaslHandshakeRequest.decode(payload, version=version).mechanism
            self.events.append(f"handshake {mechanism}")
            session["mechanism"] = mechanism
            error = 0 if mechanism == MECHANISM else UNSUPPORTED_SASL_MECHANISM
            return SaslHandshakeResponse(version=version, error_code=error, mechanisms=[MECHANISM])
        if api_key == SASL_AUTHENTICATE and session.get("mechanism") == MECHANISM:
            data = bytes(SaslAuthenticateRequest.decode(payload, version=version).auth_bytes)
            return self._scram(version, data, session)
        if api_key == METADATA and session["authenticated"]:
            return self._metadata(version)
        return None

    def _scram(self, version: int, msg: bytes, session: dict[str, Any]) -> Any:
        def reply(data: bytes = b"", error: int = 0, text: str | None = None) -> Any:
            return SaslAuthenticateResponse(
                version=version, error_code=error, error_message=text, auth_bytes=data, session_lifetime_ms=0
            )

        if session["step"] == 0:  # client-first: "n,,n=<user>,r=<client nonce>"
            bare = msg.decode().split(",", 2)[2]
            attrs = dict(kv.split("=", 1) for kv in bare.split(","))
            cred = self.users.get(attrs["n"])
            # an unknown user gets a made-up salt: the reply must not tell which part was wrong
            salt, iterations = (cred.salt, cred.iterations) if cred else (os.urandom(16), 4096)
            nonce = attrs["r"] + base64.b64encode(os.urandom(18)).decode()
            first = f"r={nonce},s={base64.b64encode(salt).decode()},i={iterations}"
            session.update(step=1, name=attrs["n"], cred=cred, bare=bare, first=first)
            return reply(first.encode())
        final = msg.decode()  # client-final: "c=biws,r=<nonce>,p=<proof>"
        without_proof, proof = final.rsplit(",p=", 1)
        auth_message = f"{session['bare']},{session['first']},{without_proof}".encode()
        cred = session["cred"]
        if cred is not None:
            signature = _hmac(cred.stored_key, auth_message)
            client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
            if hmac.compare_digest(hashlib.sha512(client_key).digest(), cred.stored_key):
                session["authenticated"] = True
                self.events.append(f"authenticated {session['name']}")
                return reply(b"v=" + base64.b64encode(_hmac(cred.server_key, auth_message)))
        self.events.append(f"login refused {session['name']}")
        return reply(error=SASL_AUTHENTICATION_FAILED, text="Authentication failed during authentication")

    def _metadata(self, version: int) -> Any:
        partition = MetadataResponse.MetadataResponseTopic.MetadataResponsePartition(
            error_code=0, partition_index=0, leader_id=0, leader_epoch=0, replica_nodes=[0], isr_nodes=[0],
            offline_replicas=[],
        )  # fmt: skip
        topic = MetadataResponse.MetadataResponseTopic(
            error_code=0, name=self.topic, is_internal=False, partitions=[partition]
        )
        broker = MetadataResponse.MetadataResponseBroker(node_id=0, host="127.0.0.1", port=self.port, rack=None)
        return MetadataResponse(
            version=version, throttle_time_ms=0, brokers=[broker], cluster_id="fake", controller_id=0, topics=[topic]
        )


def _read(conn: ssl.SSLSocket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed by the client")
        out += chunk
    return out
