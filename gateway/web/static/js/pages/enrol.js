/* 网上报名: the enrolment form of one exam (province, level, specialty, subjects); then the waiting room. */
(function () {
  "use strict";

  const EG = window.EG;
  const LABELS = { province: "报考省份", city: "城市", level: "级别", specialty: "专业", subjects: "报考科目",
                   work_years: "工作年限", commitment: "承诺", exam_id: "考试" };

  function options(select, items, label) {
    select.replaceChildren.apply(select, items.map(function (item) {
      return EG.el("option", { value: item.code, text: label(item) });
    }));
  }

  document.addEventListener("DOMContentLoaded", async function () {
    EG.requireSession();
    const examId = parseInt(location.pathname.split("/")[2], 10);
    const form = EG.$("[data-form]");
    const summary = EG.$("[data-exam-summary]");
    const alert = EG.$("[data-alert]");
    const existing = EG.registrations.get(examId);
    const result = await EG.exams();
    const exam = result.ok ? result.data.find(function (e) { return e.id === examId; }) : null;
    if (!exam) {
      summary.textContent = result.ok ? "考试不存在。" : "考试信息加载失败：" + result.error.message;
      return;
    }
    document.title = "网上报名：" + exam.name;
    summary.textContent = exam.name + "（报名时间 " + EG.time(exam.registration_opens_at) + " 至 " +
      EG.time(exam.registration_closes_at) + "，报名费 " + EG.yuan(exam.fee_per_subject_fen) + " / 科）";
    form.hidden = false;

    const province = EG.$("#province");
    const level = EG.$("#level");
    const specialty = EG.$("#specialty");
    const subjects = EG.$("[data-subjects]");
    options(province, exam.provinces.map(function (code) { return { code: code }; }), function (p) { return EG.province(p.code); });
    options(level, exam.levels, function (l) { return l.name; });

    function showSpecialties() {
      const chosen = exam.levels.find(function (l) { return l.code === level.value; }) || { specialties: [] };
      options(specialty, chosen.specialties, function (s) { return s.name; });
      showSubjects();
    }
    function showSubjects() {
      const chosenLevel = exam.levels.find(function (l) { return l.code === level.value; }) || { specialties: [] };
      const chosen = chosenLevel.specialties.find(function (s) { return s.code === specialty.value; }) || { subjects: [] };
      subjects.replaceChildren.apply(subjects, chosen.subjects.map(function (subject) {
        return EG.el("label", { className: "choice" }, [
          EG.el("input", { type: "checkbox", name: "subject", value: subject.code, "aria-describedby": "subjects-error" }),
          subject.name + "（" + subject.code + "）",
        ]);
      }));
    }
    level.addEventListener("change", showSpecialties);
    specialty.addEventListener("change", showSubjects);
    showSpecialties();

    if (existing) {
      EG.alert(alert, "您已在本浏览器提交过该考试的报名（报名号 " + existing + "）。", null, null);
      alert.appendChild(EG.el("p", {}, [EG.el("a", { href: "/registrations/" + existing + "/seat", text: "继续选择考点" })]));
    }

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(form);
      const chosenSubjects = EG.$$('input[name="subject"]:checked', form).map(function (box) { return box.value; });
      const years = EG.$("#work_years").value.trim();
      const body = {
        exam_id: examId, province: province.value, city: EG.$("#city").value.trim(), level: level.value,
        specialty: specialty.value, subjects: chosenSubjects, work_years: years === "" ? undefined : Number(years),
        commitment: EG.$("#commitment").checked ? true : undefined,
      };
      if (!body.city) delete body.city;
      if (!chosenSubjects.length) delete body.subjects;
      await EG.busy(form, async function () {
        const created = await EG.api("POST", "/api/v1/registrations", { json: body });
        if (created.status === 401) return EG.toLogin(true);
        if (!created.ok) {
          EG.showError(form, created, { labels: LABELS });
          const known = EG.registrations.get(examId);
          if (created.error.code === "already_registered" && known) {
            alert.appendChild(EG.el("p", {}, [EG.el("a", { href: "/registrations/" + known + "/seat", text: "继续选择考点" })]));
          }
          if (created.error.code === "registration_closed") {
            const d = created.error.details;
            alert.appendChild(EG.el("p", { text: "报名时间：" + EG.time(d.opens_at) + " 至 " + EG.time(d.closes_at) }));
          }
          return;
        }
        const registrationId = created.data.registration_id;
        EG.registrations.put(examId, registrationId);
        location.assign("/exams/" + examId + "/queue?registration=" + registrationId);
      });
    });
  });
})();
