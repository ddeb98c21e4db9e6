"""Kafka security for every client, and the exposure check of the servers cityops runs.

``KafkaSettings`` is the one place the security settings live; this module turns them into what
each client library wants:

- kafka-python (store writer, alerts, gateways, admin, simulator): ``KafkaSettings.client_options()``;
- aiokafka (the rule-pack follower inside the worker): :func:`aiokafka_options`;
- Faust (the worker's consumer, producer and admin): :func:`faust_credentials`.

Example (SCRAM over TLS)::

    CITYOPS_KAFKA__SECURITY_PROTOCOL=SASL_SSL CITYOPS_KAFKA__SASL_MECHANISM=SCRAM-SHA-512 \\
    CITYOPS_KAFKA__SASL_USERNAME=cityops CITYOPS_KAFKA__SASL_PASSWORD=... \\
    CITYOPS_KAFKA__SSL_CAFILE=/etc/cityops/ca.pem cityops worker
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any

from streams.gateways.settings import is_loopback

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

    from streams.settings import DashboardSettings, KafkaSettings

__all__ = ["aiokafka_options", "dashboard_exposure_problem", "faust_credentials", "ssl_context"]

logger = logging.getLogger(__name__)


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """A client TLS context for SSL and SASL_SSL (None for the plaintext protocols).

    The CA file replaces the system trust store when given; a client certificate enables mutual TLS.
    """
    if not kafka.security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None
    )
    if kafka.ssl_certfile is not None:
        context.load_cert_chain(str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None)
    context.check_hostname = kafka.ssl_check_hostname
    return context


def aiokafka_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka client options (bootstrap and security) for these settings."""
    opts: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap.split(","),
        "security_protocol": kafka.security_protocol,
    }
    context = ssl_context(kafka)
    if context is not None:
        opts["ssl_context"] = context
    if kafka.sasl_mechanism:
        opts["sasl_mechanism"] = kafka.sasl_mechanism
        opts["sasl_plain_username"] = kafka.sasl_username
        opts["sasl_plain_password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
    return opts


def faust_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """``broker_credentials`` for the Faust app (None = PLAINTEXT).

    Faust passes them to its aiokafka consumer, producer and admin client.
    """
    import faust

    context = ssl_context(kafka)
    if kafka.sasl_mechanism:
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        return faust.SASLCredentials(
            username=kafka.sasl_username, password=password, ssl_context=context, mechanism=kafka.sasl_mechanism
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def dashboard_exposure_problem(dashboard: DashboardSettings, host: str) -> str | None:
    """Why the dashboard must not listen on ``host``, or None when it may.

    Beyond loopback it needs a login: demo mode off, and password users or an OIDC provider.
    """
    if is_loopback(host):
        return None
    if dashboard.demo_mode:
        return (
            f"refusing to serve the dashboard on {host} in demo mode (no login): "
            "set CITYOPS_DASHBOARD__DEMO_MODE=false and configure CITYOPS_DASHBOARD__USERS or "
            "CITYOPS_DASHBOARD__OIDC_PROVIDER, or bind 127.0.0.1"
        )
    if not dashboard.users and not dashboard.oidc_provider:
        return (
            f"refusing to serve the dashboard on {host} without authentication: configure CITYOPS_DASHBOARD__USERS "
            "(see `cityops dashboard hash-password`) or CITYOPS_DASHBOARD__OIDC_PROVIDER, or bind 127.0.0.1"
        )
    return None
