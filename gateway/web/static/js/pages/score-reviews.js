/* 成绩复核: choose an exam and subjects from the candidate's scores and ask for a review within the exam's
 * review window (each subject once); the requests with their status, the score before and after and the
 * reason given. The window's state is shown beside the exam; the server's refusals (not_open, closed,
 * no_score, already_requested) are said in the form's alert.
 */
(function () {
  "use strict";

  const EG = window.EG;
  const STATUS = { pending: "复核中", unchanged: "成绩维持", corrected: "成绩已更正" };
  const LABELS = { exam_id: "考试", subjects: "科目" };

  let exams = [];

  function windowText(exam) {
    if (exam.window === "none") return "该考试未开放成绩复核申请。";
    const span = EG.time(exam.opens_at) + " 至 " + EG.time(exam.closes_at);
    if (exam.window === "not_open") return "复核申请期：" + span + "，尚未开始。";
    if (exam.window === "closed") return "复核申请期：" + span + "，已截止。";
    return "复核申请期：" + span + "。";
  }

  function renderSubjects() {
    const chosen = Number(EG.$("#exam_id").value);
    const exam = exams.find(function (e) { return e.exam_id === chosen; });
    const box = EG.$("[data-subjects]");
    EG.$("[data-window]").textContent = exam ? windowText(exam) : "";
    const open = Boolean(exam) && exam.window === "open";
    box.replaceChildren.apply(box, (exam ? exam.subjects : []).map(function (s) {
      const label = s.subject_name + "（" + s.subject + "）：" + s.score + " 分" + (s.requested ? "（已申请）" : "");
      return EG.el("label", { className: "choice" }, [
        EG.el("input", { type: "checkbox", name: "subject", value: s.subject, disabled: s.requested || !open }), " " + label]);
    }));
    EG.$("[data-submit]").disabled = !open;
  }

  function renderReviews(reviews) {
    const rows = reviews.map(function (r) {
      return EG.el("tr", { "data-review": String(r.review_id) }, [
        EG.el("td", { text: r.exam_name }),
        EG.el("td", { text: r.subject_name }),
        EG.el("td", { text: String(r.score_before) }),
        EG.el("td", { text: r.score_after === null ? "—" : String(r.score_after) }),
        EG.el("td", { className: "status status--" + r.status, text: STATUS[r.status] || r.status }),
        EG.el("td", { text: r.reason || "—" }),
        EG.el("td", { text: EG.time(r.requested_at) }),
        EG.el("td", { text: r.decided_at ? EG.time(r.decided_at) : "—" }),
      ]);
    });
    EG.$("[data-reviews]").replaceChildren.apply(EG.$("[data-reviews]"), rows);
    EG.$("[data-table]").hidden = !reviews.length;
    EG.$("[data-empty]").hidden = Boolean(reviews.length);
  }

  async function load(form) {
    const found = await EG.api("GET", "/api/v1/score-reviews");
    if (found.status === 401) return EG.toLogin("expired");
    if (!found.ok) return EG.showError(form, found, { labels: LABELS });
    exams = found.data.exams;
    const select = EG.$("#exam_id");
    const before = select.value;
    select.replaceChildren.apply(select, exams.map(function (e) {
      return EG.el("option", { value: String(e.exam_id), text: e.exam_name, selected: String(e.exam_id) === before });
    }));
    if (!exams.length) {
      EG.$("[data-window]").textContent = "您还没有可申请复核的成绩。";
      EG.$("[data-submit]").disabled = true;
    } else {
      renderSubjects();
    }
    renderReviews(found.data.reviews);
  }

  document.addEventListener("DOMContentLoaded", async function () {
    if (!EG.requireSession()) return;
    const form = EG.$("[data-form]");
    EG.$("#exam_id").addEventListener("change", function () { EG.clearErrors(form); renderSubjects(); });
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(form);
      EG.$("[data-alert]", form).hidden = true;
      const subjects = EG.$$('input[name="subject"]:checked', form).map(function (box) { return box.value; });
      if (!subjects.length) {
        EG.fieldError(form, "subjects", "请至少选择一个科目");
        EG.alert(EG.$("[data-alert]", form), "请选择申请复核的科目。", null, null);
        return;
      }
      await EG.busy(form, async function () {
        const made = await EG.api("POST", "/api/v1/score-reviews",
                                  { json: { exam_id: Number(EG.$("#exam_id").value), subjects: subjects } });
        if (made.status === 401) return EG.toLogin("expired");
        if (!made.ok) {
          EG.showError(form, made, { labels: LABELS, fieldFor: { no_score: "subjects", already_requested: "subjects" } });
          await load(form);
          return;
        }
        EG.$("[data-notice]", form).textContent = "已提交 " + made.data.reviews.length + " 个科目的复核申请，结果将在下方显示。";
        await load(form);
      });
    });
    await load(form);
  });
})();
