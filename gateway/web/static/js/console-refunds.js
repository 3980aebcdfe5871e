/* 运行控制台 · 退款 (operators): the refunds, newest first, with their status, attempts and the reason
 * the last attempt failed; a button to execute one again (POST …/refunds/{id}/execute, 202: the worker
 * sends it within seconds). The provider refunds a refund id once, however often it is executed.
 *
 * Runs once console.js has signed in ("eg:console-ready"), through EG.console (the token, the role).
 */
(function () {
  "use strict";

  const EG = window.EG;
  const LIST = "/admin/api/v1/refunds";
  const REFRESH_MS = 10000;
  const STATUS = { pending: "待发起", requested: "已提交，待结果", succeeded: "已退款", failed: "失败" };
  const PROVIDERS = { alipay: "支付宝", wechat: "微信支付" };
  const REASONS = { order_closed: "订单关闭后付款", order_expired: "订单过期后付款", second_payment: "重复付款",
                    seat_released: "考点已满，座位未能保留", cancellation: "放弃报名" };

  let timer = null;

  function section() { return EG.$("#refunds"); }
  function alertBox() { return EG.$("[data-refunds-alert]"); }
  function say(text) { EG.$("[data-notice]").textContent = text; }

  function reasonText(reason) {
    if (REASONS[reason]) return REASONS[reason];
    return reason.indexOf("registration_") === 0 ? "报名状态不可缴费（" + reason.slice(13) + "）" : reason;
  }

  /** A failed call: 401 signs out; anything else is shown in the section's alert. */
  function failed(result, what) {
    if (result.status === 401) { EG.console.signOut("管理令牌无效或已撤销，请重新输入。"); return; }
    EG.alert(alertBox(), what + "失败：" + result.error.message, null, result.retryAfterS);
    alertBox().focus();
  }

  function nextText(refund) {
    if (refund.status === "succeeded") return "—";
    if (refund.next_attempt_at) return EG.time(refund.next_attempt_at, true);
    return refund.status === "failed" ? "已停止重试，需人工执行" : "等待人工执行";
  }

  function action(refund) {
    if (refund.status === "succeeded") return EG.el("span", { className: "muted", text: "已完成 " + EG.time(refund.finished_at) });
    if (!EG.console.may("admin.refunds.execute")) return EG.el("span", { className: "muted", text: "无权执行" });
    const again = refund.attempts > 0;
    return EG.el("button", { type: "button", className: refund.status === "failed" ? "primary" : "secondary",
                             text: again ? "重新执行" : "立即执行",
                             "aria-label": (again ? "重新执行退款 " : "立即执行退款 ") + refund.refund_id,
                             onclick: function (event) { execute(refund, event.currentTarget); } });
  }

  function row(refund) {
    const failure = refund.last_error
      ? EG.el("td", { className: refund.status === "failed" ? "error-text" : "", text: refund.last_error })
      : EG.el("td", { className: "muted", text: "—" });
    const attempts = refund.attempts ? "已发起 " + refund.attempts + " 次" : "尚未发起";
    return EG.el("tr", { "data-refund": refund.refund_id, "data-status": refund.status }, [
      EG.el("td", {}, [EG.el("code", { text: refund.refund_id }), EG.el("br"),
                       (PROVIDERS[refund.provider] || refund.provider) + " " + EG.yuan(refund.amount_fen)]),
      EG.el("td", {}, [EG.el("code", { text: refund.order_no }), EG.el("br"), "报名 " + refund.registration_id]),
      EG.el("td", { text: reasonText(refund.reason) + (refund.requested_by !== "system" ? "（" + refund.requested_by + "）" : "") }),
      EG.el("td", {}, [EG.el("strong", { text: STATUS[refund.status] || refund.status }), EG.el("br"), attempts]),
      failure,
      EG.el("td", { text: nextText(refund) }),
      EG.el("td", {}, [action(refund)]),
    ]);
  }

  function render(refunds) {
    const body = EG.$("[data-refunds]");
    const rows = refunds.map(row);
    if (!rows.length) rows.push(EG.el("tr", {}, [EG.el("td", { colspan: "7", className: "muted", text: "没有退款记录" })]));
    body.replaceChildren.apply(body, rows);
    const failedCount = refunds.filter(function (r) { return r.status === "failed" && !r.next_attempt_at; }).length;
    EG.$("[data-refunds-summary]").textContent = failedCount
      ? failedCount + " 笔退款重试用尽仍失败，请查看失败原因后重新执行。" : "";
  }

  async function load() {
    const status = EG.$("[data-refunds-status]").value;
    const listed = await EG.console.admin("GET", LIST + "?limit=100" + (status ? "&status=" + status : ""));
    if (!listed.ok) return failed(listed, "加载退款列表");
    alertBox().hidden = true;
    render(listed.data.refunds);
  }

  async function execute(refund, button) {
    button.disabled = true;
    const done = await EG.console.admin("POST", LIST + "/" + encodeURIComponent(refund.refund_id) + "/execute");
    button.disabled = false;
    if (!done.ok) return failed(done, "执行退款");
    say("退款 " + refund.refund_id + " 已排队，后台将在数秒内向" + (PROVIDERS[refund.provider] || refund.provider) + "发起。");
    await load();
    setTimeout(load, 3000);
  }

  function stop() {
    clearInterval(timer);
    timer = null;
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!section()) return;
    const chooser = EG.$("[data-refunds-status]");
    chooser.replaceChildren.apply(chooser, [EG.el("option", { value: "", text: "全部" })].concat(
      Object.keys(STATUS).map(function (status) {
        return EG.el("option", { value: status, text: STATUS[status] });
      })));
    chooser.addEventListener("change", load);
    EG.$("[data-refunds-reload]").addEventListener("click", load);
  });

  document.addEventListener("eg:console-ready", function () {
    if (!section() || !EG.console.may("admin.refunds.list")) return;
    load();
    stop();
    timer = setInterval(function () { if (!document.hidden) load(); }, REFRESH_MS);
  });

  document.addEventListener("eg:console-signed-out", function () {
    stop();
    if (section()) EG.$("[data-refunds]").replaceChildren();
  });
})();
