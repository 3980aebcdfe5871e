/* 缴费: open the order of an approved registration holding a seat, pay at the provider's cashier page, come
 * back and see the ticket number. A registration not approved yet is pointed to its status page. */
(function () {
  "use strict";

  const EG = window.EG;
  const SETTLE_WAIT_S = 90;
  const STATUS_NAMES = { draft: "待确认", under_review: "网上审核中", onsite_review: "待现场审核", approved: "审核通过，待缴费",
                         rejected: "审核未通过", paid: "已缴费", cancelled: "已放弃报名", expired: "已过期" };
  const BEFORE_APPROVAL = ["draft", "under_review", "onsite_review", "rejected"];

  document.addEventListener("DOMContentLoaded", async function () {
    EG.requireSession();
    const registrationId = location.pathname.split("/")[2];
    const params = new URLSearchParams(location.search);
    const form = EG.$("[data-form]");
    const alert = EG.$("[data-alert]");
    const status = EG.$("[data-status]");
    const summary = EG.$("[data-summary]");
    const countdown = EG.$("[data-countdown]");
    const statusPage = "/registrations/" + registrationId;
    let exam = null;
    let ticking = null;
    let waitingSince = null;

    function next(text, href) {
      EG.$("[data-next-link]").textContent = text;
      EG.$("[data-next-link]").href = href;
      EG.$("[data-next]").hidden = false;
    }

    function showDetails(registration) {
      const subjectNames = {};
      if (exam) exam.levels.forEach(function (l) { l.specialties.forEach(function (s) { s.subjects.forEach(function (j) { subjectNames[j.code] = j.name; }); }); });
      EG.dl(EG.$("[data-details-list]"), [
        ["考试", exam ? exam.name : registration.exam_id],
        ["报名号", registration.registration_id],
        ["状态", STATUS_NAMES[registration.status] || registration.status],
        ["报考省份", EG.province(registration.province) + " · " + registration.city],
        ["报考科目", registration.subjects.map(function (code) { return subjectNames[code] || code; }).join("、")],
        ["订单号", registration.order_no],
      ]);
      EG.$("[data-details]").hidden = false;
    }

    function showCountdown(expiresAt) {
      clearInterval(ticking);
      const end = Date.parse(expiresAt);
      const tick = function () {
        const left = Math.round((end - Date.now()) / 1000);
        countdown.textContent = left > 0 ? EG.duration(left) : "已过期";
        if (left <= 0) {
          clearInterval(ticking);
          EG.$("[data-submit]", form).disabled = true;
          EG.alert(alert, "座位保留已过期，请重新选择考点。", null, null);
          next("重新选择考点", "/registrations/" + registrationId + "/seat");
        }
      };
      tick();
      ticking = setInterval(tick, 1000);
    }

    function showPaid(registration) {
      clearInterval(ticking);
      form.hidden = true;
      status.textContent = "缴费成功。";
      EG.$("[data-ticket-no]").textContent = registration.ticket_no || "正在生成…";
      EG.$("[data-ticket-link]").href = "/tickets?exam=" + registration.exam_id;
      const paid = EG.$("[data-paid]");
      paid.hidden = false;
      next("查看报名状态", statusPage);
      paid.focus();
    }

    async function load() {
      const loaded = await EG.api("GET", "/api/v1/registrations/" + registrationId);
      if (loaded.status === 401) return EG.toLogin(true);
      if (!loaded.ok) {
        EG.alert(alert, loaded.error.message, null, loaded.retryAfterS);
        if (loaded.status === 429 || loaded.status === 503) setTimeout(load, (loaded.retryAfterS || 2) * 1000);
        return;
      }
      const registration = loaded.data;
      if (!exam) {
        const exams = await EG.exams();
        exam = exams.ok ? exams.data.find(function (e) { return e.id === registration.exam_id; }) : null;
      }
      summary.textContent = exam ? exam.name : "";
      showDetails(registration);
      if (registration.status === "paid" && registration.ticket_no) return showPaid(registration);
      if (registration.status === "paid" || (registration.status === "approved" && (params.get("returned") || waitingSince))) {
        // Back from the cashier: the provider's notification is on its way; follow the registration until it lands.
        form.hidden = true;
        waitingSince = waitingSince || Date.now();
        if (Date.now() - waitingSince > SETTLE_WAIT_S * 1000) {
          status.textContent = "";
          EG.alert(alert, "暂未收到支付结果。如已付款，请稍后刷新本页查看；如未付款，可重新支付。", null, null);
          waitingSince = null;
          params.delete("returned");
          history.replaceState(null, "", location.pathname);
          return load();
        }
        status.textContent = "正在确认支付结果，请稍候…";
        setTimeout(load, 1000);
        return;
      }
      if (BEFORE_APPROVAL.indexOf(registration.status) >= 0) {
        status.textContent = "当前报名状态为“" + STATUS_NAMES[registration.status] + "”，资格审核通过后才能缴费。";
        next("查看报名状态", statusPage);
        return;
      }
      if (registration.status !== "approved") {
        status.textContent = "该报名" + (STATUS_NAMES[registration.status] || registration.status) + "，不能缴费。";
        next("查看报名状态", statusPage);
        return;
      }
      status.textContent = "";
      if (exam) EG.$("[data-amount]").textContent = EG.yuan(exam.fee_per_subject_fen * registration.subjects.length);
      if (registration.hold_expires_at) showCountdown(registration.hold_expires_at);
      else {
        countdown.textContent = "无（座位保留已失效）";
        next("重新选择考点", "/registrations/" + registrationId + "/seat");
      }
      form.hidden = false;
    }

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(form);
      const provider = (EG.$('input[name="provider"]:checked', form) || {}).value;
      await EG.busy(form, async function () {
        const opened = await EG.api("POST", "/api/v1/registrations/" + registrationId + "/orders", { json: { provider: provider } });
        if (opened.status === 401) return EG.toLogin(true);
        if (!opened.ok) {
          EG.showError(form, opened, { labels: { provider: "支付方式" } });
          const code = opened.error.code;
          if (code === "hold_required") next("重新选择考点", "/registrations/" + registrationId + "/seat");
          if (code === "not_approved") next("查看报名状态", statusPage);
          if (code === "already_paid" || code === "payment_processing") { waitingSince = Date.now(); load(); }
          return;
        }
        EG.$("[data-amount]").textContent = EG.yuan(opened.data.amount_fen);
        const cashier = new URL(opened.data.pay_url, location.href);
        cashier.searchParams.set("return_url", location.origin + "/registrations/" + registrationId + "/pay?returned=1");
        status.textContent = "正在前往" + (opened.data.provider === "wechat" ? "微信支付" : "支付宝") + "收银台…";
        location.assign(cashier.toString());
      });
    });

    load();
  });
})();
