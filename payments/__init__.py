"""payments: provider protocols (Alipay, WeChat Pay v3), merchant clients and the payment simulator."""

from payments.notice import Notice

__all__ = ["Notice"]
