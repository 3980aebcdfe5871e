/* 运行控制台 · 照片审核: the photo queues (待审核: flagged by the checks; 抽查: approved by the checks and
 * sampled; approved and rejected lists), each photo shown from its signed link with the candidate's name,
 * masked id and the checks' findings; approve, or reject with a listed or typed reason; the candidates'
 * change requests for a locked photo, granted (one new upload) or refused with a reason.
 *
 * Sign-in: js/console-signin.js (the console's token). A photo decided by someone else meanwhile
 * (already_reviewed), replaced by the candidate (photo_superseded), or a request already decided
 * (already_decided) is said plainly and the list reloaded.
 */
(function () {
  "use strict";

  const EG = window.EG;
  const PAGE = 30;
  const STATUS = { approved: "审核通过", needs_review: "待人工审核", rejected: "审核未通过" };
  const REQUEST_STATUS = { pending: "待处理", granted: "已同意（待重新上传）", refused: "未同意", used: "已重新上传" };
  const ACTIONS = {
    upload: "上传照片", approve: "审核通过", reject: "驳回", change_request: "申请更换", change_grant: "同意更换",
    change_refuse: "不同意更换", change_used: "使用更换机会上传",
  };
  const CONFLICTS = ["already_reviewed", "photo_superseded", "already_decided"];

  let reasons = {};
  let photos = [];
  let nextAfter = null;
  let requests = [];
  let nextRequest = null;

  const signIn = EG.consoleSignIn({ page: "[data-photos]", route: "admin.photos.list", what: "照片审核",
                                    scope: "审核范围", onEnter: enter });
  const admin = signIn.admin;
  const alertBox = signIn.alertBox;
  const say = signIn.say;
  function problem(result, what) { signIn.problem(result, what, CONFLICTS); }

  async function enter(me) {
    const listed = await admin("GET", "/admin/api/v1/photo-reject-reasons");
    reasons = listed.ok ? listed.data : {};
    EG.$("[data-changes-section]").hidden = me.routes.indexOf("admin.photo_changes.list") < 0;
    await loadQueue(true);
    if (!EG.$("[data-changes-section]").hidden) await loadChanges(true);
  }

  // --- the photo queue ------------------------------------------------------------------------------------

  function who(item) { return item.candidate_name + "（" + item.id_number + "）"; }

  function decisionForm(item) {
    const id = item.photo_id;
    const choose = EG.el("select", { id: "reason-" + id, name: "reason", "aria-describedby": "reason-" + id + "-error" },
      [EG.el("option", { value: "", text: "请选择驳回原因" })].concat(Object.keys(reasons).map(function (code) {
        return EG.el("option", { value: code, text: reasons[code] });
      })));
    const other = EG.el("input", { id: "other-" + id, name: "other", maxlength: "200", autocomplete: "off",
                                   "aria-describedby": "reason-" + id + "-error" });
    const form = EG.el("form", { className: "form photo-decision", novalidate: true, "aria-label": "审核 " + who(item) + " 的照片" }, [
      EG.el("div", { className: "alert", role: "alert", "data-alert": true, hidden: true, tabindex: "-1" }),
      EG.el("div", { className: "field", "data-field": "reason" }, [
        EG.el("label", { for: "reason-" + id, text: "驳回原因" }), choose,
      ]),
      EG.el("div", { className: "field", "data-field": "other" }, [
        EG.el("label", { for: "other-" + id, text: "或填写其他原因（将告知考生）" }), other,
        EG.el("p", { className: "field-error", id: "reason-" + id + "-error", "data-error-for": "reason" }),
      ]),
      EG.el("div", { className: "actions" }, [
        EG.el("button", { type: "button", className: "primary", text: "通过", "aria-label": "通过：" + item.candidate_name + " 的照片",
                          onclick: function () { decide(item, form, true); } }),
        EG.el("button", { type: "button", className: "danger", text: "驳回", "aria-label": "驳回：" + item.candidate_name + " 的照片",
                          onclick: function () { decide(item, form, false); } }),
      ]),
    ]);
    form.addEventListener("submit", function (event) { event.preventDefault(); });
    return form;
  }

  function photoCard(item) {
    const decided = item.reviewed_at !== null;
    const rows = [
      ["照片编号", item.photo_id],
      ["状态", (STATUS[item.status] || item.status) + (item.locked ? "（已锁定）" : "")],
      ["上传时间", EG.time(item.uploaded_at, true)],
      ["系统检测", item.messages.length ? item.messages.join("；") : "通过" + (item.sampled ? "（抽查）" : "")],
    ];
    if (decided) {
      rows.push(["人工审核", (item.reviewed_by || "—") + " · " + EG.time(item.reviewed_at, true)]);
      if (item.review_reason) rows.push(["驳回原因", item.review_reason]);
    }
    const details = EG.el("dl", { className: "details" });
    EG.dl(details, rows);
    const history = EG.el("ul", { className: "plain-list photo-history", hidden: true });
    const historyButton = EG.el("button", { type: "button", className: "link-button", text: "查看办理记录",
                                            "aria-label": "查看 " + item.candidate_name + " 的照片办理记录",
                                            onclick: function () { showHistory(item, history); } });
    return EG.el("li", { className: "photo-card", "data-photo": String(item.photo_id) }, [
      EG.el("img", { className: "photo", src: item.url, alt: item.candidate_name + " 的报名照片", width: "148", height: "207" }),
      EG.el("div", { className: "photo-card__body" }, [
        EG.el("h3", { text: who(item) }),
        details,
        decided ? EG.el("p", { className: "muted", text: "已由人工审核，无需再审。" }) : decisionForm(item),
        historyButton,
        history,
      ]),
    ]);
  }

  function renderQueue() {
    const list = EG.$("[data-queue]");
    const cards = photos.map(photoCard);
    if (!cards.length) cards.push(EG.el("li", { className: "muted", text: "没有符合条件的照片" }));
    list.replaceChildren.apply(list, cards);
    EG.$("[data-count]").textContent = "共显示 " + photos.length + " 张" + (nextAfter ? "，还有更多" : "");
    EG.$("[data-more]").hidden = !nextAfter;
  }

  async function loadQueue(reset) {
    const params = new URLSearchParams({ status: EG.$("#filter-status").value, limit: String(PAGE) });
    if (!reset && nextAfter) params.set("after", String(nextAfter));
    const listed = await admin("GET", "/admin/api/v1/photos?" + params.toString());
    if (!listed.ok) return problem(listed, "加载照片队列失败");
    photos = (reset ? [] : photos).concat(listed.data.photos);
    nextAfter = listed.data.next_after;
    renderQueue();
  }

  async function showHistory(item, target) {
    if (!target.hidden) { target.hidden = true; return; }
    const loaded = await admin("GET", "/admin/api/v1/photos/" + item.photo_id);
    if (!loaded.ok) return problem(loaded, "加载办理记录失败");
    target.replaceChildren.apply(target, loaded.data.history.map(function (event) {
      return EG.el("li", { text: EG.time(event.at, true) + " · " + (ACTIONS[event.action] || event.action) +
                                 (event.photo_id ? "（照片 " + event.photo_id + "）" : "") + " · " + event.actor +
                                 (event.reason ? " · " + event.reason : "") });
    }));
    target.hidden = false;
  }

  async function decide(item, form, approve) {
    EG.clearErrors(form);
    alertBox().hidden = true;
    const typed = EG.$("#other-" + item.photo_id, form).value.trim();
    const picked = EG.$("#reason-" + item.photo_id, form).value;
    const reason = typed || picked;
    if (!approve && !reason) {
      EG.fieldError(form, "reason", "请选择或填写驳回原因");
      EG.$("#reason-" + item.photo_id, form).focus();
      return;
    }
    const buttons = EG.$$("button", form);
    buttons.forEach(function (b) { b.disabled = true; });
    const decided = await admin("POST", "/admin/api/v1/photos/" + item.photo_id + "/review", {
      json: approve ? { decision: "approve" } : { decision: "reject", reason: reason },
    });
    buttons.forEach(function (b) { b.disabled = false; });
    if (!decided.ok) {
      if (decided.status === 422) return EG.showError(form, decided, { labels: { reason: "驳回原因" } });
      problem(decided, who(item) + " 的照片");
      if (CONFLICTS.indexOf(decided.error.code) >= 0) await loadQueue(true);
      return;
    }
    say(who(item) + " 的照片" + (approve ? "已审核通过并锁定。" : "已驳回，原因已告知考生：" + decided.data.review_reason));
    await loadQueue(true);
  }

  // --- change requests ------------------------------------------------------------------------------------

  function changeRow(item) {
    const id = item.request_id;
    let handling;
    if (item.status === "pending") {
      const note = EG.el("input", { id: "note-" + id, maxlength: "200", autocomplete: "off",
                                    "aria-label": "处理意见：申请 " + id + "（" + item.candidate_name + "）" });
      const error = EG.el("p", { className: "field-error" });
      handling = EG.el("div", { className: "change-decision" }, [
        note, error,
        EG.el("div", { className: "actions" }, [
          EG.el("button", { type: "button", className: "primary", text: "同意更换",
                            "aria-label": "同意更换：申请 " + id + "（" + item.candidate_name + "）",
                            onclick: function () { decideChange(item, true, note, error); } }),
          EG.el("button", { type: "button", className: "danger", text: "不同意",
                            "aria-label": "不同意：申请 " + id + "（" + item.candidate_name + "）",
                            onclick: function () { decideChange(item, false, note, error); } }),
        ]),
      ]);
    } else {
      handling = EG.el("span", { text: [item.decided_by, EG.time(item.decided_at, true), item.decision_reason]
                                   .filter(function (part) { return part && part !== "—"; }).join(" · ") || "—" });
    }
    return EG.el("tr", { "data-request": String(id) }, [
      EG.el("td", { text: String(id) }),
      EG.el("td", { text: item.candidate_name }),
      EG.el("td", { text: item.id_number }),
      EG.el("td", { text: item.reason }),
      EG.el("td", { text: EG.time(item.requested_at, true) }),
      EG.el("td", { text: REQUEST_STATUS[item.status] || item.status }),
      EG.el("td", {}, [handling]),
    ]);
  }

  function renderChanges() {
    const body = EG.$("[data-changes]");
    const rows = requests.map(changeRow);
    if (!rows.length) rows.push(EG.el("tr", {}, [EG.el("td", { colspan: "7", className: "muted", text: "没有符合条件的申请" })]));
    body.replaceChildren.apply(body, rows);
    EG.$("[data-changes-more]").hidden = !nextRequest;
  }

  async function loadChanges(reset) {
    const params = new URLSearchParams({ status: EG.$("#changes-status").value, limit: String(PAGE) });
    if (!reset && nextRequest) params.set("after", String(nextRequest));
    const listed = await admin("GET", "/admin/api/v1/photo-change-requests?" + params.toString());
    if (!listed.ok) return problem(listed, "加载更换申请失败");
    requests = (reset ? [] : requests).concat(listed.data.requests);
    nextRequest = listed.data.next_after;
    renderChanges();
  }

  async function decideChange(item, grant, note, error) {
    error.textContent = "";
    note.removeAttribute("aria-invalid");
    alertBox().hidden = true;
    const reason = note.value.trim();
    if (!grant && !reason) {
      error.textContent = "不同意更换时请填写原因（将告知考生）";
      note.setAttribute("aria-invalid", "true");
      note.focus();
      return;
    }
    const decided = await admin("POST", "/admin/api/v1/photo-change-requests/" + item.request_id + (grant ? "/grant" : "/refuse"),
                                { json: reason ? { reason: reason } : {} });
    if (!decided.ok) {
      if (decided.status === 422) {
        error.textContent = decided.error.message;
        note.setAttribute("aria-invalid", "true");
        return;
      }
      problem(decided, "申请 " + item.request_id);
      if (CONFLICTS.indexOf(decided.error.code) >= 0) await loadChanges(true);
      return;
    }
    say("申请 " + item.request_id + "（" + item.candidate_name + "）" +
        (grant ? "已同意：考生可重新上传一次照片。" : "未同意，照片保持不变。"));
    await loadChanges(true);
  }

  // --- start ------------------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", function () {
    EG.$("[data-filter]").addEventListener("submit", function (event) {
      event.preventDefault();
      alertBox().hidden = true;
      loadQueue(true);
    });
    EG.$("[data-more]").addEventListener("click", function () { loadQueue(false); });
    EG.$("[data-changes-filter]").addEventListener("submit", function (event) {
      event.preventDefault();
      alertBox().hidden = true;
      loadChanges(true);
    });
    EG.$("[data-changes-more]").addEventListener("click", function () { loadChanges(false); });
  });
})();
