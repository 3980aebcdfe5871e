"""Captchas: a pre-drawn image pool and ALTCHA proof-of-work, each consumed by its first use.

``check.consume`` is what the gateway calls on a protected POST; ``pool.take`` serves an
image, ``pow.create_challenge`` a challenge; ``pool.refill`` is the worker's job;
``loadtest`` signs the tokens that let load tests skip the captcha.
"""
