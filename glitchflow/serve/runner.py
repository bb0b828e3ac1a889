"""Start and stop the endpoint on the current Ray cluster (used by the CLI, demo and tests)."""

from __future__ import annotations

import ipaddress
import logging
import os
import time
import urllib.request

from glitchflow.config import Config
from glitchflow.serve.app import ServeArgs, build_app

log = logging.getLogger(__name__)

APP_NAME = "glitchflow"


def is_loopback(host: str) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def check_exposure(cfg: Config, env_vars: dict | None = None, insecure: bool = False) -> None:
    """Refuse to bind off loopback without a bearer token (unless ``insecure``)."""
    s = cfg.serve
    token = (env_vars or {}).get(s.token_env) or os.environ.get(s.token_env)
    if not is_loopback(s.host) and not token and not insecure:
        raise PermissionError(
            f"serve.host={s.host} is off loopback and ${s.token_env} is unset: anyone who can "
            f"reach the port could use the endpoint. Set ${s.token_env} (clients then send "
            "'Authorization: Bearer <token>'), bind 127.0.0.1, or pass --insecure."
        )


def start_endpoint(
    cfg: Config,
    model: str,
    tracking_uri: str | None = None,
    config_path=None,
    overrides=(),
    timeout: float = 120.0,
    env_vars: dict | None = None,
    insecure: bool = False,
    user_config: dict | None = None,
) -> str:
    """Deploy the application with Serve's HTTP proxy on ``serve.host:serve.port``; wait
    until ``/healthz`` answers; return the base URL.  Off loopback a token is required
    (:func:`check_exposure`)."""
    from ray import serve

    check_exposure(cfg, env_vars, insecure)
    s = cfg.serve
    serve.start(http_options={"host": s.host, "port": s.port})
    args = ServeArgs(
        model=model,
        tracking_uri=tracking_uri,
        config=str(config_path) if config_path else None,
        overrides=list(overrides),
    )
    serve.run(build_app(args, env_vars, user_config), name=APP_NAME, route_prefix=s.route_prefix)
    url = f"http://{s.host}:{s.port}{s.route_prefix.rstrip('/')}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
                if resp.status == 200:
                    return url
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}/healthz did not answer in {timeout} s: {exc}") from None
        time.sleep(0.5)


def stop_endpoint() -> None:
    from ray import serve

    serve.delete(APP_NAME)
