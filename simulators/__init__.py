"""Provider simulators for development, demos and tests: ``paysim`` (Alipay, WeChat Pay), ``smssim`` (Aliyun SMS).

They stand beside the product, in place of the outside services it talks to: they may use
its public parts (payment signing, keys, settings), and no product package imports them (see
the import contracts in pyproject.toml). Their commands reach ``examgate`` as plugins (the
``examgate.commands`` entry points; ``simulators.cli``).
"""
