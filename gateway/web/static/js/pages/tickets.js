/* 准考证打印: look the admission ticket up by name and id number; show it and link its PDF. */
(function () {
  "use strict";

  const EG = window.EG;
  const LABELS = { exam_id: "考试", name: "姓名", id_number: "证件号码", captcha: "安全验证" };

  document.addEventListener("DOMContentLoaded", async function () {
    const form = EG.$("[data-form]");
    const captcha = EG.captchaOf(form);
    const result = EG.$("[data-result]");
    if (!(await EG.fillExamSelect(form))) return;

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(form);
      result.hidden = true;
      const v = EG.formValues(form);
      const body = { exam_id: Number(v.exam_id), name: v.name || undefined, id_number: v.id_number || undefined };
      await EG.busy(form, async function () {
        const proof = await captcha.value();
        if (proof === null) return;
        if (proof !== undefined) body.captcha = proof;
        const found = await EG.api("POST", "/api/v1/tickets/lookup", { json: body, token: null });
        if (found.status !== 422 && found.status !== 425) captcha.renew();
        if (!found.ok) {
          EG.showError(form, found, { labels: LABELS, fieldFor: { captcha_invalid: "captcha" } });
          if (found.error.code === "not_yet_available") {
            const d = found.error.details;
            EG.$("[data-alert]", form).appendChild(EG.el("p", { text: "打印时间：" + EG.time(d.available_from) + " 至 " + EG.time(d.available_until) + "。" }));
          }
          return;
        }
        const ticket = found.data;
        EG.dl(EG.$("[data-ticket]"), [
          ["准考证号", ticket.ticket_no], ["姓名", ticket.name], ["考试", ticket.exam.name],
          ["考点", ticket.site.name], ["考点地址", ticket.site.address], ["考场", "第 " + ticket.room + " 考场"],
          ["座位号", ticket.seat_no],
        ]);
        const rows = ticket.subjects.map(function (s) {
          return EG.el("tr", {}, [EG.el("td", { text: s.name }), EG.el("td", { text: EG.time(s.starts_at) }), EG.el("td", { text: EG.time(s.ends_at) })]);
        });
        EG.$("[data-subjects]").replaceChildren.apply(EG.$("[data-subjects]"), rows);
        // An expired link would download the API's 403 instead of the ticket: say so instead.
        EG.expiringLink(EG.$("[data-pdf]"), ticket.pdf_url, "ticket-" + ticket.ticket_no + ".pdf", function () {
          result.hidden = true;
          EG.alert(EG.$("[data-alert]", form), "下载链接已过期，请重新查询准考证。", null, null);
          EG.$("[data-alert]", form).focus();
        });
        result.hidden = false;
        result.focus();
      });
    });
  });
})();
