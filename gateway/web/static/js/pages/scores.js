/* 成绩查询: scores by name and id number or ticket number, once released. */
(function () {
  "use strict";

  const EG = window.EG;
  const LABELS = { exam_id: "考试", name: "姓名", id_number: "证件号码", ticket_no: "准考证号", captcha: "安全验证" };

  document.addEventListener("DOMContentLoaded", async function () {
    const form = EG.$("[data-form]");
    const captcha = EG.captchaOf(form);
    const result = EG.$("[data-result]");

    EG.$$('input[name="mode"]', form).forEach(function (radio) {
      radio.addEventListener("change", function () {
        EG.$$("[data-mode]", form).forEach(function (field) {
          const on = field.getAttribute("data-mode") === radio.value;
          field.hidden = !on;
          EG.$("input", field).disabled = !on;
        });
      });
    });

    if (!(await EG.fillExamSelect(form))) return;

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(form);
      result.hidden = true;
      const v = EG.formValues(form);
      const body = { exam_id: Number(v.exam_id), name: v.name || undefined };
      if (v.mode === "ticket_no") body.ticket_no = v.ticket_no || undefined;
      else body.id_number = v.id_number || undefined;
      if (!body.ticket_no && !body.id_number) {
        // The API would name id_number whichever way was chosen; say it next to the input shown.
        EG.fieldError(form, v.mode, "此项必填");
        EG.alert(EG.$("[data-alert]", form), "请填写" + LABELS[v.mode] + "。", null, null);
        EG.$("#" + v.mode).focus();
        return;
      }
      await EG.busy(form, async function () {
        const proof = await captcha.value();
        if (proof === null) return;
        if (proof !== undefined) body.captcha = proof;
        const found = await EG.api("POST", "/api/v1/scores/lookup", { json: body, token: null });
        if (found.status !== 422 && found.status !== 425) captcha.renew();
        if (!found.ok) {
          EG.showError(form, found, { labels: LABELS, fieldFor: { captcha_invalid: "captcha" } });
          if (found.error.code === "not_yet_released") {
            EG.$("[data-alert]", form).appendChild(EG.el("p", { text: "成绩发布时间：" + EG.time(found.error.details.release_at) + "。" }));
          }
          return;
        }
        const scores = found.data;
        EG.$("[data-result-summary]").textContent = scores.name + "（准考证号 " + scores.ticket_no + "）：" +
          (scores.passed_all ? "全部科目合格。" : "有科目未达到合格标准。");
        const rows = scores.subjects.map(function (s) {
          return EG.el("tr", {}, [
            EG.el("td", { text: s.name }),
            EG.el("td", { text: String(s.score) }),
            EG.el("td", { text: s.pass_mark === null ? "—" : String(s.pass_mark) }),
            EG.el("td", { className: s.passed ? "pass" : "fail", text: s.passed ? "合格" : "不合格" }),
            EG.el("td", { text: s.year ? String(s.year) : "—" }),
            EG.el("td", { text: s.valid_until ? s.valid_until + " 年" : "—" }),
          ]);
        });
        EG.$("[data-scores]").replaceChildren.apply(EG.$("[data-scores]"), rows);
        // Rolling validity: the level is complete when every subject is passed within one period.
        const qualification = EG.$("[data-qualification]");
        const rolling = scores.validity_years > 1
          ? "成绩实行 " + scores.validity_years + " 年滚动管理，合格科目在有效期内保留。" : "";
        qualification.textContent = scores.qualified === true ? "已通过全部科目，成绩合格。"
          : scores.qualified === null
            ? "本次报考科目均已合格。" + rolling + "是否已在有效期内通过全部科目，请登录后在报名页查看往年有效成绩。"
            : rolling;
        qualification.hidden = !qualification.textContent;
        result.hidden = false;
        result.focus();
      });
    });
  });
})();
