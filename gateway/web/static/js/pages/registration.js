/* 报名状态: a registration's home. The flow (填写报名信息 → 阅读告知/签署承诺 → 资格审核 → 选择考点 →
 * 缴费 → 打印准考证) with what is done and what comes next, the review's reasons, and the buttons the
 * state allows: edit, confirm, withdraw the confirmation, 放弃报名, on to the seats or the payment.
 * A draft without an approved photo says so (``missing``, ``photo_status``) and links the photo page;
 * a confirmed registration offers 下载报名表 (GET …/form → its signed PDF link).
 */
(function () {
  "use strict";

  const EG = window.EG;
  const STEPS = ["填写报名信息", "阅读告知/签署承诺", "资格审核", "选择考点", "缴费", "打印准考证"];
  const STEP_STATES = { done: "已完成", current: "当前步骤", todo: "未开始", failed: "未通过" };
  const ACTIONS = {
    edit: "修改报名信息", sign_commitment: "签署告知承诺书", confirm: "确认报名信息", decide: "资格审核",
    withdraw: "撤回确认", cancel: "放弃报名", withdraw_commitment: "撤回告知承诺", request_cancellation: "申请放弃报名",
    approve_cancellation: "放弃报名申请获批准（退费）", pay: "缴费",
    "score_review.requested": "申请成绩复核", "score_review.unchanged": "成绩复核：成绩维持",
    "score_review.corrected": "成绩复核：成绩已更正",
  };
  const ARRIVALS = {
    enrol: "报名信息已保存。请阅读报名须知、签署告知承诺并确认报名信息。",
    edit: "报名信息已修改，请重新确认报名信息。",
  };
  // The photo a draft lacks (photo_status → what to say, the link's text); and the photo's status by name.
  const PHOTO_NEEDED = {
    none: ["尚未上传报名照片。照片审核通过后才能确认报名信息。", "上传照片"],
    needs_review: ["报名照片正在人工审核中，审核通过后才能确认报名信息。", "查看照片审核进度"],
    rejected: ["报名照片审核未通过，请按原因重新上传照片，审核通过后才能确认报名信息。", "重新上传照片"],
  };
  const PHOTO_STATUS = { approved: "审核通过", needs_review: "待人工审核", rejected: "审核未通过" };
  // Statuses whose registration form (报名表) can be printed: confirmed and standing.
  const FORM_STATUSES = ["under_review", "onsite_review", "approved", "paid"];
  const CONFIRMED = {
    approved: "报名信息已确认，资格审核已通过。",
    under_review: "报名信息已确认，已提交考试机构网上审核。",
    onsite_review: "报名信息已确认，请按要求到审核点进行现场审核。",
    rejected: "报名信息已确认，但资格审核未通过。",
  };

  document.addEventListener("DOMContentLoaded", async function () {
    EG.requireSession();
    const registrationId = location.pathname.split("/")[2];
    const params = new URLSearchParams(location.search);
    const alert = EG.$("[data-alert]");
    const summary = EG.$("[data-summary]");
    const notice = EG.$("[data-notice]");
    const stateBox = EG.$("[data-state]");
    let exam = null;

    function stepStates(registration, held) {
      switch (registration.status) {
        case "draft": return ["done", "current", "todo", "todo", "todo", "todo"];
        case "under_review":
        case "onsite_review": return ["done", "done", "current", "todo", "todo", "todo"];
        case "rejected": return ["done", "done", "failed", "todo", "todo", "todo"];
        case "approved": return held ? ["done", "done", "done", "done", "current", "todo"]
                                     : ["done", "done", "done", "current", "todo", "todo"];
        case "paid": return ["done", "done", "done", "done", "done", "current"];
        default: return ["todo", "todo", "todo", "todo", "todo", "todo"];
      }
    }

    function needsPhoto(registration) {
      return (registration.missing || []).indexOf("photo") >= 0 ||
        (registration.status === "rejected" && registration.photo_status !== "approved");
    }

    function photoPath(registration) {
      return "/photo?registration=" + registration.registration_id;
    }

    async function renderPhoto(registration) {
      const box = EG.$("[data-photo-box]");
      box.hidden = !needsPhoto(registration);
      if (box.hidden) return;
      const said = PHOTO_NEEDED[registration.photo_status] || PHOTO_NEEDED.none;
      EG.$("[data-photo-text]").textContent = said[0];
      const link = EG.$("[data-photo-link]");
      link.textContent = said[1];
      link.href = photoPath(registration);
      const reason = EG.$("[data-photo-reason]");
      reason.hidden = true;
      if (registration.photo_status !== "rejected") return;
      const photo = await EG.api("GET", "/api/v1/me/photo");
      if (photo.ok && photo.data.review_reason) {
        reason.textContent = "未通过原因：" + photo.data.review_reason;
        reason.hidden = false;
      }
    }

    function stepNotes(registration, held) {
      const signed = registration.commitment ? "已签署（" + EG.time(registration.commitment.signed_at) + "）" : "";
      const review = { under_review: "网上审核中", onsite_review: "待现场审核", rejected: "审核未通过" }[registration.status];
      return [
        (registration.status === "draft" || registration.status === "rejected" ? "可修改" : "已提交") +
          (needsPhoto(registration) ? "；缺少审核通过的照片" : ""),
        signed || (registration.status === "draft" ? "阅读须知并确认报名信息" : ""),
        review || (["approved", "paid"].indexOf(registration.status) >= 0 ? "审核通过" : ""),
        held ? "已保留座位" : (registration.status === "paid" ? "考点已确定" : ""),
        registration.status === "paid" ? "已缴费" : (held ? "请在保留期内缴费" : ""),
        registration.ticket_no ? "准考证号 " + registration.ticket_no : "",
      ];
    }

    function renderFlow(registration, held) {
      const states = stepStates(registration, held);
      const notes = stepNotes(registration, held);
      const flow = EG.$("[data-flow]");
      flow.classList.toggle("flow--ended", registration.status === "cancelled" || registration.status === "expired");
      flow.replaceChildren.apply(flow, STEPS.map(function (name, index) {
        const state = states[index];
        return EG.el("li", { className: "flow__step flow__step--" + state, "aria-current": state === "current" || state === "failed" ? "step" : null }, [
          EG.el("span", { className: "flow__name", text: name }),
          EG.el("span", { className: "flow__state", text: STEP_STATES[state] }),
          notes[index] ? EG.el("span", { className: "flow__note", text: notes[index] }) : null,
        ]);
      }));
    }

    function statusText(registration, held, cancelRequested) {
      switch (registration.status) {
        case "draft": return "报名信息尚未确认。请阅读报名须知、签署告知承诺并确认报名信息，确认后系统即进行资格审核。";
        case "under_review": return "您的报名信息已确认，正在由考试机构进行网上资格审核，审核结果将在本页显示。";
        case "onsite_review": return "您的报名需要现场资格审核，请在规定时间内携带身份证件和学历证明材料到审核点办理。";
        case "rejected": return "资格审核未通过。请根据下列原因修改报名信息后重新确认。";
        case "approved": return held
          ? "资格审核已通过，已为您保留考点座位，请在 " + EG.time(registration.hold_expires_at, true) + " 前完成缴费。"
          : "资格审核已通过，请选择考点；选定后座位为您保留一段时间，请在保留期内缴费。";
        case "paid": return cancelRequested
          ? "您已申请放弃报名，申请正等待考试机构审核；审核通过后退还报名费，准考证同时作废。"
          : "您已完成缴费，报名成功。准考证打印开放后，可在“准考证打印”页面下载。";
        case "cancelled": return "您已放弃本次报名。";
        case "expired": return "该报名已过期。";
        default: return "";
      }
    }

    function renderReasons(registration) {
      const reasons = registration.reasons || [];
      const box = EG.$("[data-reasons]");
      const shown = reasons.length && ["rejected", "under_review", "onsite_review"].indexOf(registration.status) >= 0;
      box.hidden = !shown;
      if (!shown) return;
      EG.$("[data-reasons-title]").textContent = registration.status === "rejected" ? "审核未通过的原因" : "需人工审核的原因";
      const list = EG.$("[data-reasons-list]");
      list.replaceChildren.apply(list, reasons.map(function (reason) { return EG.el("li", { text: reason.message }); }));
    }

    function link(text, href, primary) {
      return EG.el("a", { className: "button" + (primary ? "" : " secondary"), href: href, text: text });
    }

    function button(text, className, onclick) {
      return EG.el("button", { type: "button", className: className, text: text, onclick: onclick });
    }

    function renderActions(registration, held, cancelRequested) {
      const id = registration.registration_id;
      const items = [];
      const cancel = button(registration.status === "paid" ? "申请放弃报名" : "放弃报名", "danger", function () { giveUp(registration); });
      const withdraw = button("撤回确认", "secondary", function () { withdrawConfirmation(); });
      switch (registration.status) {
        case "draft":
          // Without an approved photo the photo box above leads the way; confirming would be refused (409).
          items.push(link("确认报名信息", EG.registrationPath(id, "commitment"), !needsPhoto(registration)), link("修改报名信息", EG.registrationPath(id, "edit")), cancel);
          break;
        case "rejected":
          items.push(link("修改报名信息", EG.registrationPath(id, "edit"), true), link("重新确认报名信息", EG.registrationPath(id, "commitment")), cancel);
          break;
        case "under_review":
        case "onsite_review":
          items.push(withdraw, cancel);
          break;
        case "approved":
          if (held) items.push(link("去缴费", EG.registrationPath(id, "pay"), true), link("更换考点", EG.registrationPath(id, "seat")));
          else items.push(link("选择考点", "/exams/" + registration.exam_id + "/queue?registration=" + id, true));
          items.push(withdraw, cancel);
          break;
        case "paid":
          items.push(link("前往准考证打印", "/tickets?exam=" + registration.exam_id, true));
          if (!cancelRequested) items.push(cancel);
          break;
        default:
          items.push(link("返回首页", "/", true));
      }
      if (FORM_STATUSES.indexOf(registration.status) >= 0) {
        items.splice(1, 0, button("下载报名表", "secondary", function () { downloadForm(registration); }));
      }
      const box = EG.$("[data-actions]");
      box.replaceChildren.apply(box, items);
    }

    /** 下载报名表: a fresh signed link to the form's PDF, followed at once and shown for another try. */
    async function downloadForm(registration) {
      alert.hidden = true;
      const box = EG.$("[data-form-box]");
      box.hidden = true;
      const form = await EG.api("GET", "/api/v1/registrations/" + registration.registration_id + "/form");
      if (!form.ok) return failed(form);
      const anchor = EG.$("[data-form-link]");
      anchor.href = form.data.pdf_url;
      anchor.setAttribute("download", "");  // saved, not opened in place; the name is the server's
      box.hidden = false;
      anchor.click();
    }

    async function siteName(registration) {
      if (!registration.site_id) return null;
      const listed = await EG.api("GET", "/api/v1/exams/" + registration.exam_id + "/sites?province=" + registration.province, { token: null });
      const site = listed.ok ? listed.data.find(function (s) { return s.site_id === registration.site_id; }) : null;
      return site ? site.name + "（" + site.city + " · " + site.address + "）" : "考点 " + registration.site_id;
    }

    async function reviewPointName(registration) {
      if (!registration.review_point) return "未指定";
      const listed = await EG.api("GET", "/api/v1/exams/" + registration.exam_id + "/review-points?province=" + registration.province, { token: null });
      const point = listed.ok ? listed.data.find(function (p) { return p.review_point_id === registration.review_point; }) : null;
      return point ? point.name + "（" + point.city + (point.address ? " · " + point.address : "") + "）" : "审核点 " + registration.review_point;
    }

    async function renderDetails(registration) {
      const names = EG.levelNames(exam, registration.level, registration.specialty);
      const subjects = EG.subjectNames(exam);
      const site = await siteName(registration);
      EG.dl(EG.$("[data-details-list]"), [
        ["考试", exam ? exam.name : registration.exam_id],
        ["报名号", registration.registration_id],
        ["级别 · 专业", names[0] + " · " + names[1]],
        ["报考科目", (registration.subjects || []).map(function (code) { return subjects[code] || code; }).join("、")],
        ["报考省份 · 城市", EG.province(registration.province) + " · " + (registration.city || "—")],
        ["相关工作年限", registration.work_years === null || registration.work_years === undefined ? null : registration.work_years + " 年"],
        ["审核点", await reviewPointName(registration)],
        ["报名照片", PHOTO_STATUS[registration.photo_status] || "未上传"],
        ["告知承诺", registration.commitment ? "已签署（第 " + registration.commitment.version + " 版，" + EG.time(registration.commitment.signed_at) + "）" : "未签署"],
        ["考点", site],
        ["座位保留至", registration.hold_expires_at ? EG.time(registration.hold_expires_at, true) : null],
        ["订单号", registration.order_no],
        ["准考证号", registration.ticket_no],
      ]);
      EG.$("[data-details]").hidden = false;
    }

    function renderHistory(events) {
      const rows = events.map(function (event) {
        const reasons = (event.reasons || []).map(function (r) { return r.message; }).join("；");
        return EG.el("tr", {}, [
          EG.el("td", { text: EG.time(event.at, true) }),
          EG.el("td", { text: (ACTIONS[event.action] || event.action) + (reasons ? "：" + reasons : "") }),
          EG.el("td", { text: EG.statusName(event.to) }),
        ]);
      });
      EG.$("[data-history-rows]").replaceChildren.apply(EG.$("[data-history-rows]"), rows);
      EG.$("[data-history]").hidden = !rows.length;
    }

    function failed(result) {
      if (result.status === 401) { EG.toLogin(true); return; }
      EG.alert(alert, result.error.message, null, result.retryAfterS);
      alert.focus();
    }

    async function load() {
      const loaded = await EG.api("GET", "/api/v1/registrations/" + registrationId);
      if (loaded.status === 401) return EG.toLogin(true);
      if (!loaded.ok) {
        summary.textContent = "";
        EG.alert(alert, loaded.error.message, null, loaded.retryAfterS);
        return;
      }
      const registration = loaded.data;
      EG.registrations.put(registration.exam_id, registration.registration_id);
      if (!exam) {
        const exams = await EG.exams();
        exam = exams.ok ? exams.data.find(function (e) { return e.id === registration.exam_id; }) : null;
      }
      const history = await EG.api("GET", "/api/v1/registrations/" + registrationId + "/history");
      const events = history.ok ? history.data : [];
      const cancelRequested = registration.status === "paid" && events.some(function (e) { return e.action === "request_cancellation"; });
      const held = registration.status === "approved" && Boolean(registration.site_id && registration.hold_expires_at &&
                                                                 Date.parse(registration.hold_expires_at) > Date.now());
      summary.textContent = (exam ? exam.name + " · " : "") + "报名号 " + registration.registration_id;
      EG.$("[data-status-name]").textContent = EG.statusName(registration.status);
      EG.$("[data-status-text]").textContent = statusText(registration, held, cancelRequested);
      renderFlow(registration, held);
      renderReasons(registration);
      renderActions(registration, held, cancelRequested);
      await renderPhoto(registration);
      stateBox.hidden = false;
      renderHistory(events);
      await renderDetails(registration);
      return registration;
    }

    async function withdrawConfirmation() {
      const agreed = await EG.ask({
        title: "撤回确认",
        text: "撤回后报名回到“待确认”状态：已保留的考点座位将释放，未支付的订单将关闭；修改后须重新确认并重新审核。确定撤回吗？",
        yes: "确定撤回",
      });
      if (!agreed) return;
      alert.hidden = true;
      const withdrawn = await EG.api("POST", "/api/v1/registrations/" + registrationId + "/withdraw");
      if (!withdrawn.ok) return failed(withdrawn);
      notice.textContent = "已撤回确认，报名信息可以修改，修改后请重新确认。";
      await load();
      stateBox.focus();
    }

    async function giveUp(registration) {
      const result = await EG.cancelRegistration(registration);
      if (!result) return;
      alert.hidden = true;
      if (!result.ok) return failed(result);
      notice.textContent = result.status === 202 ? "放弃报名申请已提交，等待考试机构审核。" : "您已放弃本次报名。";
      await load();
      stateBox.focus();
    }

    const from = params.get("from");
    const registration = await load();
    if (!registration) return;
    if (from === "confirm") notice.textContent = CONFIRMED[registration.status] || "";
    else if (ARRIVALS[from]) notice.textContent = ARRIVALS[from];
  });
})();
