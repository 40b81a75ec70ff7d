"""The Kafka connection every component opens (kafka-python): the security settings as client
keyword arguments, and a start-up probe that says why a broker refused.

kafka-python accepts any protocol, mechanism or missing password at construction and reports a
refused TLS or SASL handshake only as "Unable to bootstrap" after its bootstrap timeout; the
cause is in its log records alone. `probe` reads it from there, so a service can name it.
"""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


class _Secret(str):
    """A password as kafka-python needs it (a str), shown as *** wherever it is printed:
    KafkaAdminClient logs its whole configuration at DEBUG."""

    __slots__ = ()

    def __repr__(self) -> str:  # str() stays the password: the SCRAM client encodes it
        return "'***'"


def client_kwargs(
    bootstrap: str,
    protocol: str = "PLAINTEXT",
    mechanism: str = "SCRAM-SHA-512",
    username: str = "",
    password: str = "",
    ca_file: Path | None = None,
    check_hostname: bool = True,
) -> dict[str, Any]:
    """Keyword arguments for KafkaProducer, KafkaConsumer and KafkaAdminClient alike."""
    kw: dict[str, Any] = {"bootstrap_servers": bootstrap, "security_protocol": protocol}
    if protocol.startswith("SASL_"):
        kw |= {"sasl_mechanism": mechanism, "sasl_plain_username": username, "sasl_plain_password": _Secret(password)}
    if protocol.endswith("SSL"):
        kw |= {"ssl_cafile": str(ca_file) if ca_file else None, "ssl_check_hostname": check_hostname}
    return kw


@dataclass(frozen=True)
class Refusal:
    """Why a probe did not get metadata: `unreachable` may pass (a broker starting); `tls` and
    `sasl` are settings that will not work until someone changes them; `stopped`: the service
    was asked to stop while it waited."""

    kind: Literal["unreachable", "tls", "sasl", "stopped"]
    detail: str


def probe(kwargs: dict[str, Any], timeout_s: float, stop: threading.Event | None = None) -> Refusal | None:
    """Connects (TLS, SASL) and reads metadata; None if that worked within `timeout_s`. A
    refused handshake or login ends the wait at once (the client keeps trying in the
    background until its own timeout, in a daemon thread), and so does `stop` (kind `stopped`)."""
    from kafka import KafkaAdminClient

    failed: list[BaseException] = []
    done = threading.Event()
    name = f"sandmeter-probe-{next(_probes)}"  # the client's id and threads: its log records

    def connect() -> None:
        try:
            ms = int(timeout_s * 1000)
            KafkaAdminClient(
                **kwargs, client_id=name, request_timeout_ms=max(ms, 1000), bootstrap_timeout_ms=ms
            ).close()
        except Exception as exc:
            failed.append(exc)
        finally:
            done.set()

    with _Causes({name, f"kafka-io-{name}"}) as causes:
        threading.Thread(target=connect, name=name, daemon=True).start()
        while not done.wait(0.05):
            if stop is not None and stop.is_set():
                return Refusal("stopped", "asked to stop before the broker answered")
            refusal = causes.refusal()
            if refusal is not None and refusal.kind != "unreachable":
                return refusal
        if not failed:
            return None
        return causes.refusal() or Refusal("unreachable", _line(failed[0]))


_probes = itertools.count(1)


class _Causes(logging.Filter):
    """Collects the exceptions kafka-python's connection manager logs while one probe's client
    bootstraps (records of its threads only; dropped: the caller reports the cause itself)."""

    LOGGER = "kafka.net.manager"

    def __init__(self, threads: set[str]) -> None:
        super().__init__()
        self.threads = threads
        self.seen: list[BaseException] = []
        self._level = logging.NOTSET

    def filter(self, record: logging.LogRecord) -> bool:
        if record.threadName not in self.threads:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        self.seen.extend(a for a in args if isinstance(a, BaseException))
        return False

    def __enter__(self) -> _Causes:
        log = logging.getLogger(self.LOGGER)
        self._level = log.level
        log.setLevel(logging.WARNING)
        log.addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        log = logging.getLogger(self.LOGGER)
        log.removeFilter(self)
        log.setLevel(self._level)

    def refusal(self) -> Refusal | None:
        from kafka import errors

        seen = list(self.seen)  # appended to by the client's IO thread
        for exc in reversed(seen):
            if isinstance(exc, errors.SaslAuthenticationFailedError | errors.UnsupportedSaslMechanismError):
                return Refusal("sasl", _line(exc))
            if "SSL" in str(exc) or "Handshake failed" in str(exc):
                return Refusal("tls", _line(exc))
        # the last cause before kafka-python's own "Unable to bootstrap", which says nothing more
        causes = [e for e in seen if not isinstance(e, errors.KafkaTimeoutError)]
        return Refusal("unreachable", _line(causes[-1])) if causes else None


def _line(exc: BaseException) -> str:
    name, text = type(exc).__name__, " ".join(str(exc).split())[:200]
    return text if text.startswith(name) else f"{name}: {text}" if text else name
