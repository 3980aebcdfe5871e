"""The payment simulator's cashier pages (what ``pay_url`` points at), in Chinese like the real ones."""

from __future__ import annotations

from html import escape
from urllib.parse import quote, urlsplit

from payments.money import fen_to_yuan
from simulators.paysim_trades import CLOSED, PAID, SimTrade

PROVIDER_NAMES = {"alipay": "支付宝", "wechat": "微信支付"}

_PAGE = """<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, "PingFang SC", "Microsoft YaHei", sans-serif; background: #f4f5f7; margin: 0; }}
main {{ max-width: 26rem; margin: 3rem auto; background: #fff; border-radius: 8px; padding: 1.5rem 2rem;
        box-shadow: 0 1px 4px rgba(0,0,0,.1); }}
h1 {{ font-size: 1.1rem; margin: 0 0 1rem; }}
.amount {{ font-size: 2rem; font-weight: 600; margin: .5rem 0 1rem; }}
dl {{ display: grid; grid-template-columns: auto 1fr; gap: .4rem 1rem; margin: 0 0 1.5rem; }}
dt {{ color: #666; }} dd {{ margin: 0; word-break: break-all; }}
button {{ width: 100%; padding: .8rem; font-size: 1.1rem; border: 0; border-radius: 6px; color: #fff;
          background: {colour}; cursor: pointer; }}
.ok {{ color: #1a7f37; font-size: 1.3rem; font-weight: 600; }} .closed {{ color: #b42318; font-weight: 600; }}
.note {{ color: #999; font-size: .8rem; margin-top: 1.5rem; }}
</style>
</head>
<body>
<main>
{content}
<p class="note">模拟收银台（examgate paysim），不产生真实扣款。</p>
</main>
</body>
</html>
"""


def pay_page(trade: SimTrade, return_url: str | None = None) -> str:
    """The cashier page: the amount, the order, and a 支付 button (or the outcome if it is settled)."""
    provider = PROVIDER_NAMES[trade.provider]
    content = [
        f"<h1>{provider}收银台</h1>",
        f'<p class="amount">¥{fen_to_yuan(trade.amount_fen)}</p>',
        "<dl>",
        f"<dt>订单号</dt><dd>{escape(trade.order_no)}</dd>",
        f"<dt>商品</dt><dd>{escape(trade.subject)}</dd>",
        f"<dt>支付方式</dt><dd>{provider}</dd>",
        "</dl>",
    ]
    if trade.state == PAID:
        content.append('<p class="ok">支付成功</p>')
        content.append(_back_link(return_url))
    elif trade.state == CLOSED:
        content.append('<p class="closed">订单已关闭，无法支付</p>')
        content.append(_back_link(return_url))
    else:
        action = f"/pay/{quote(trade.order_no, safe='')}"
        back = safe_return_url(return_url)
        hidden = f'<input type="hidden" name="return_url" value="{escape(back)}">' if back else ""
        content.append(f'<form method="post" action="{escape(action)}">{hidden}'
                       '<button type="submit">支付</button></form>')
    return _render(f"{provider} - 订单 {trade.order_no}", "\n".join(content), trade.provider)


def not_found_page(order_no: str) -> str:
    """The page for an order number the simulator never saw."""
    content = f"<h1>订单不存在</h1>\n<p>没有找到订单 {escape(order_no)}，请返回商户重新下单。</p>"
    return _render("订单不存在", content, "alipay")


def safe_return_url(url: str | None) -> str | None:
    """``url`` if it is an http(s) URL with a host (never ``javascript:`` and the like), else None."""
    if not url:
        return None
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.netloc else None


def _back_link(return_url: str | None) -> str:
    url = safe_return_url(return_url)
    return f'<p><a href="{escape(url)}">返回商户</a></p>' if url else ""


def _render(title: str, content: str, provider: str) -> str:
    colour = "#1677ff" if provider == "alipay" else "#07c160"
    return _PAGE.format(title=escape(title), content=content, colour=colour)
