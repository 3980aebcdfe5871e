"""``examgate paysim``, registered as a plugin command (entry point ``paysim`` in ``examgate.commands``)."""

from __future__ import annotations

from typing import Any

import click

from gateway import config


@click.command("paysim")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default EXAMGATE_PAYSIM_PORT).")
@click.option("--host", help="Bind address (default EXAMGATE_HOST).")
@click.option("--time-scale", type=click.FloatRange(0.00001, 1000),
              help="Multiply the providers' retry schedules by this (default EXAMGATE_PAYSIM_TIME_SCALE).")
def paysim(port: int | None, host: str | None, time_scale: float | None) -> None:
    """Run the payment provider simulator (Alipay and WeChat Pay, state in memory)."""
    import uvloop

    from gateway.logs import configure_logging
    from payments import keys as payment_keys
    from payments.errors import KeysInvalid, KeysMissing
    from simulators.paysim import serve as serve_paysim

    overrides: dict[str, Any] = {"paysim_port": port, "paysim_time_scale": time_scale}
    try:
        settings = config.load(**{k: v for k, v in overrides.items() if v is not None})
    except config.ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None
    try:
        keys = payment_keys.load(settings.keys_dir)
    except (KeysMissing, KeysInvalid) as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(settings.log_level, "paysim")
    bind = host or settings.host
    try:
        uvloop.run(serve_paysim(keys, bind, settings.paysim_port, time_scale=settings.paysim_time_scale,
                                sellers={settings.alipay_app_id: settings.alipay_seller_id}))
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {bind}:{settings.paysim_port}: {exc}") from None
