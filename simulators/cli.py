"""``examgate paysim`` and ``examgate smssim``: plugin commands (entry points in the group ``examgate.commands``)."""

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


def _latency(raw: str | None) -> tuple[float, float] | None:
    """``20`` or ``10-50`` (milliseconds) as (low, high)."""
    if raw is None:
        return None
    low, _, high = raw.partition("-")
    try:
        bounds = (float(low), float(high or low))
    except ValueError:
        raise click.BadParameter("must be milliseconds, N or LOW-HIGH", param_hint="--latency-ms") from None
    if not 0 <= bounds[0] <= bounds[1] <= 60_000:
        raise click.BadParameter("must be 0 ≤ LOW ≤ HIGH ≤ 60000", param_hint="--latency-ms")
    return bounds


@click.command("smssim")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default EXAMGATE_SMSSIM_PORT).")
@click.option("--host", help="Bind address (default EXAMGATE_HOST).")
@click.option("--latency-ms", help="Answer after this long: N, or LOW-HIGH drawn at random (default 0).")
@click.option("--failure-ratio", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of calls answered with a provider error (isp.SYSTEM_ERROR or a 503), nothing delivered.")
@click.option("--lost-ratio", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of messages delivered whose answer is lost (a gateway's 504).")
@click.option("--rate", "rate_per_s", type=click.FloatRange(0), default=0.0, show_default=True,
              help="The account's sending rate per second; beyond it isv.BUSINESS_LIMIT_CONTROL (0: no limit).")
@click.option("--phone-per-minute", type=click.IntRange(0), default=1, show_default=True,
              help="Messages per number per minute; beyond it isv.BUSINESS_LIMIT_CONTROL (0: no limit).")
@click.option("--minute-s", type=click.FloatRange(0.001), default=60.0, show_default=True,
              help="How long the simulator's minute lasts (tests shorten it).")
@click.option("--seed", type=int, help="Seed of the random latency, failures and losses.")
def smssim(port: int | None, host: str | None, latency_ms: str | None, failure_ratio: float, lost_ratio: float,
           rate_per_s: float, phone_per_minute: int, minute_s: float, seed: int | None) -> None:
    """Run the SMS provider simulator (Alibaba Cloud SMS SendSms and QuerySendDetails, state in memory)."""
    import uvloop

    from gateway.logs import configure_logging
    from simulators.smssim import SimConfig, SmsSimulator
    from simulators.smssim import serve as serve_smssim

    try:
        overrides: dict[str, Any] = {"smssim_port": port} if port is not None else {}
        settings = config.load(**overrides)
    except config.ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None
    low, high = _latency(latency_ms) or (0.0, 0.0)
    sim = SmsSimulator(
        access_key_id=settings.sms_access_key_id, access_key_secret=settings.sms_access_key_secret,
        sign_name=settings.sms_sign_name, template_codes=settings.sms_template_codes, seed=seed,
        config=SimConfig(latency_min_ms=low, latency_max_ms=high, failure_ratio=failure_ratio, lost_ratio=lost_ratio,
                         rate_per_s=rate_per_s, phone_per_minute=phone_per_minute, minute_s=minute_s))
    configure_logging(settings.log_level, "smssim")
    bind = host or settings.host
    try:
        uvloop.run(serve_smssim(sim, bind, settings.smssim_port))
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {bind}:{settings.smssim_port}: {exc}") from None
