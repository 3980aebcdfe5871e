/* 合格标准: an exam's pass marks per level and subject (GET /api/v1/exams/{id}/pass-marks) and its validity period. */
(function () {
  "use strict";

  const EG = window.EG;

  document.addEventListener("DOMContentLoaded", async function () {
    const form = EG.$("[data-form]");
    const result = EG.$("[data-result]");
    const select = EG.$("#exam_id", form);
    if (!(await EG.fillExamSelect(form))) return;
    const exams = (await EG.exams()).data;

    async function show() {
      const exam = exams.find(function (e) { return String(e.id) === select.value; });
      if (!exam) return;
      const found = await EG.api("GET", "/api/v1/exams/" + exam.id + "/pass-marks", { token: null });
      if (!found.ok) {
        EG.alert(EG.$("[data-alert]", form), "合格标准加载失败：" + found.error.message, null, found.retryAfterS);
        result.hidden = true;
        return;
      }
      EG.$("[data-alert]", form).hidden = true;
      EG.$("[data-result-title]").textContent = exam.name + " 合格标准";
      const years = exam.validity_years || 1;
      EG.$("[data-validity]").textContent = years > 1
        ? "成绩实行 " + years + " 年为一个周期的滚动管理：" + exam.year + " 年考试合格的科目在 " +
          (exam.year + years - 1) + " 年（含）以前的考试中有效，在一个周期内通过全部应试科目即为合格。"
        : "成绩当年有效：须在 " + exam.year + " 年考试中通过全部应试科目。";
      const rows = found.data.map(function (m) {
        return EG.el("tr", {}, [
          EG.el("td", { text: m.level_name }),
          EG.el("td", { text: m.subject_name }),
          EG.el("td", { text: String(m.pass_mark) }),
          EG.el("td", { text: String(m.full_mark) }),
        ]);
      });
      const body = EG.$("[data-marks]");
      body.replaceChildren.apply(body, rows);
      EG.$("[data-empty]").hidden = rows.length > 0;
      EG.$("[data-table]").hidden = rows.length === 0;
      result.hidden = false;
    }

    select.addEventListener("change", show);
    await show();
  });
})();
