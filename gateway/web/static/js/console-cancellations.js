/* 运行控制台 · 放弃报名申请 (operators): paid candidates who gave up their registration; approving one
 * cancels it (the ticket withdrawn, the seat back to the site) and refunds the payment through its
 * provider (POST …/registrations/{id}/cancellation, 202 with the refund's id, then in 退款 above);
 * refusing keeps it paid, with a note.
 *
 * Runs once console.js has signed in ("eg:console-ready"), through EG.console (the token, the role).
 */
(function () {
  "use strict";

  const EG = window.EG;
  const LIST = "/admin/api/v1/cancellations";
  const STATUS = { pending: "待处理", approved: "已批准并退费", refused: "已拒绝" };

  function section() { return EG.$("#cancellations"); }
  function alertBox() { return EG.$("[data-cancellations-alert]"); }

  function failed(result, what) {
    if (result.status === 401) { EG.console.signOut("管理令牌无效或已撤销，请重新输入。"); return; }
    EG.alert(alertBox(), what + "失败：" + result.error.message, null, result.retryAfterS);
    alertBox().focus();
  }

  function decideButton(request, decision) {
    const approve = decision === "approve";
    return EG.el("button", { type: "button", className: approve ? "primary" : "secondary",
                             text: approve ? "批准并退费" : "拒绝",
                             "aria-label": (approve ? "批准放弃报名并退费：报名 " : "拒绝放弃报名：报名 ") + request.registration_id,
                             onclick: function (event) { decide(request, decision, event.currentTarget); } });
  }

  function actions(request) {
    if (request.status !== "pending") {
      const done = request.refund_id ? "退款 " + request.refund_id : (request.note || "—");
      return EG.el("span", { className: "muted", text: (request.decided_by || "") + " " + done });
    }
    if (!EG.console.may("admin.cancellations.decide")) return EG.el("span", { className: "muted", text: "无权处理" });
    return EG.el("span", {}, [decideButton(request, "approve"), " ", decideButton(request, "refuse")]);
  }

  function row(request) {
    return EG.el("tr", { "data-cancellation": String(request.registration_id) }, [
      EG.el("td", { text: "报名 " + request.registration_id }),
      EG.el("td", { text: "考试 " + request.exam_id + " · 省份 " + request.province }),
      EG.el("td", { text: EG.time(request.requested_at, true) }),
      EG.el("td", { text: STATUS[request.status] || request.status }),
      EG.el("td", {}, [actions(request)]),
    ]);
  }

  async function load() {
    const status = EG.$("[data-cancellations-status]").value;
    const listed = await EG.console.admin("GET", LIST + "?status=" + status);
    if (!listed.ok) return failed(listed, "加载放弃报名申请");
    alertBox().hidden = true;
    const rows = listed.data.cancellations.map(row);
    if (!rows.length) rows.push(EG.el("tr", {}, [EG.el("td", { colspan: "5", className: "muted", text: "没有申请" })]));
    const body = EG.$("[data-cancellations]");
    body.replaceChildren.apply(body, rows);
  }

  async function decide(request, decision, button) {
    let note = "";
    if (decision === "refuse") {
      note = window.prompt("拒绝原因（将记入该报名的处理记录）：", "");
      if (note === null) return;
    }
    button.disabled = true;
    const done = await EG.console.admin("POST", "/admin/api/v1/registrations/" + request.registration_id + "/cancellation",
                                        { json: { decision: decision, note: note } });
    button.disabled = false;
    if (!done.ok) return failed(done, decision === "approve" ? "批准放弃报名" : "拒绝放弃报名");
    EG.$("[data-notice]").textContent = decision === "approve"
      ? "报名 " + request.registration_id + " 已取消，退款 " + done.data.refund_id + " 已发起。"
      : "已拒绝报名 " + request.registration_id + " 的放弃申请。";
    await load();
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!section()) return;
    const chooser = EG.$("[data-cancellations-status]");
    chooser.replaceChildren.apply(chooser, Object.keys(STATUS).map(function (status) {
      return EG.el("option", { value: status, text: STATUS[status] });
    }));
    chooser.addEventListener("change", load);
    EG.$("[data-cancellations-reload]").addEventListener("click", load);
  });

  document.addEventListener("eg:console-ready", function () {
    if (section() && EG.console.may("admin.cancellations.list")) load();
  });

  document.addEventListener("eg:console-signed-out", function () {
    if (section()) EG.$("[data-cancellations]").replaceChildren();
  });
})();
