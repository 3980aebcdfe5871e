/* 网上报名: the enrolment form of one exam (province, city, review point, level, specialty, subjects, work
 * years), then the registration's status page. The same form edits a draft or rejected registration
 * (修改报名信息, /registrations/<id>/edit: PATCH; the exam and province stay), which is a draft again after.
 */
(function () {
  "use strict";

  const EG = window.EG;
  const LABELS = { province: "报考省份", city: "城市", level: "级别", specialty: "专业", subjects: "报考科目",
                   work_years: "工作年限", review_point: "资格审核点", exam_id: "考试" };
  const EDITABLE = ["draft", "rejected"];

  function options(select, items, label) {
    select.replaceChildren.apply(select, items.map(function (item) {
      return EG.el("option", { value: item.code, text: label(item) });
    }));
  }

  function statusLink(registrationId, text) {
    return EG.el("p", {}, [EG.el("a", { href: "/registrations/" + registrationId, text: text || "查看报名状态" })]);
  }

  document.addEventListener("DOMContentLoaded", async function () {
    EG.requireSession();
    const editing = document.body.getAttribute("data-page") === "registration_edit";
    const form = EG.$("[data-form]");
    const summary = EG.$("[data-exam-summary]");
    const alert = EG.$("[data-alert]");
    let examId = parseInt(location.pathname.split("/")[2], 10);
    let registration = null;

    if (editing) {
      EG.$("[data-heading]").textContent = "修改报名信息";
      const loaded = await EG.api("GET", "/api/v1/registrations/" + location.pathname.split("/")[2]);
      if (loaded.status === 401) return EG.toLogin(true);
      if (!loaded.ok) {
        summary.textContent = "报名信息加载失败：" + loaded.error.message;
        return;
      }
      registration = loaded.data;
      examId = registration.exam_id;
    }
    const existing = editing ? null : EG.registrations.get(examId);
    const result = await EG.exams();
    const exam = result.ok ? result.data.find(function (e) { return e.id === examId; }) : null;
    if (!exam) {
      summary.textContent = result.ok ? "考试不存在。" : "考试信息加载失败：" + result.error.message;
      return;
    }
    document.title = (editing ? "修改报名信息：" : "网上报名：") + exam.name;
    summary.textContent = exam.name + "（报名时间 " + EG.time(exam.registration_opens_at) + " 至 " +
      EG.time(exam.registration_closes_at) + "，报名费 " + EG.yuan(exam.fee_per_subject_fen) + " / 科）";
    if (editing && EDITABLE.indexOf(registration.status) < 0) {
      summary.textContent = exam.name + " · 报名号 " + registration.registration_id;
      const page = EG.$("main");
      const box = EG.el("div", { className: "alert", role: "alert", tabindex: "-1" }, [
        EG.el("p", { text: "当前报名状态为“" + ({ under_review: "网上审核中", onsite_review: "待现场审核", approved: "审核通过",
                                                  paid: "已缴费", cancelled: "已放弃报名", expired: "已过期" }[registration.status] ||
                                                 registration.status) + "”，不能修改报名信息。" }),
        statusLink(registration.registration_id, "返回报名状态"),
      ]);
      page.insertBefore(box, form);
      return;
    }
    form.hidden = false;

    // An old candidate's passes still valid in the family (rolling validity): shown, and not offered again.
    const mine = await EG.api("GET", "/api/v1/exams/" + examId + "/my-valid-subjects");
    if (mine.status === 401) return EG.toLogin(true);
    const carried = mine.ok ? mine.data.subjects : [];
    if (mine.ok && (carried.length || mine.data.archive_no)) {
      const panel = EG.$("[data-carried]");
      EG.$("[data-archive-no]").textContent = mine.data.archive_no ? "网报档案号：" + mine.data.archive_no : "";
      const list = EG.$("[data-carried-list]");
      list.replaceChildren.apply(list, carried.map(function (p) {
        return EG.el("li", { text: p.name + "（" + p.code + "）：" + p.year + " 年合格，成绩 " + p.score + "，有效至 " +
                                   p.valid_until + " 年" });
      }));
      if (mine.data.qualified) {
        const qualified = EG.$("[data-qualified]");
        qualified.textContent = "您已在一个有效期内通过该级别专业的全部科目，成绩合格。";
        qualified.hidden = false;
      }
      panel.hidden = !carried.length && !mine.data.archive_no;
    }
    function carriedPass(levelCode, subjectCode) {
      return carried.find(function (p) { return p.level === levelCode && p.code === subjectCode; });
    }

    const province = EG.$("#province");
    const level = EG.$("#level");
    const specialty = EG.$("#specialty");
    const subjects = EG.$("[data-subjects]");
    const reviewPoint = EG.$("#review_point");
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
        const passed = carriedPass(level.value, subject.code);
        return EG.el("label", { className: "choice" }, [
          EG.el("input", { type: "checkbox", name: "subject", value: subject.code, "aria-describedby": "subjects-error",
                           disabled: Boolean(passed), "data-carried-subject": passed ? "true" : undefined }),
          subject.name + "（" + subject.code + "）" +
            (passed ? "：" + passed.year + " 年已合格，有效至 " + passed.valid_until + " 年，无需报考" : ""),
        ]);
      }));
    }
    async function showReviewPoints(selected) {
      const field = EG.$('[data-field="review_point"]');
      const listed = await EG.api("GET", "/api/v1/exams/" + examId + "/review-points?province=" + encodeURIComponent(province.value), { token: null });
      const points = listed.ok ? listed.data : [];
      reviewPoint.replaceChildren.apply(reviewPoint, [EG.el("option", { value: "", text: "暂不选择" })].concat(points.map(function (p) {
        return EG.el("option", { value: String(p.review_point_id), text: p.name + "（" + p.city + (p.address ? " · " + p.address : "") + "）",
                                 selected: String(p.review_point_id) === String(selected) });
      })));
      field.hidden = !points.length;
    }
    level.addEventListener("change", showSpecialties);
    specialty.addEventListener("change", showSubjects);
    province.addEventListener("change", function () { showReviewPoints(null); });
    showSpecialties();

    if (editing) {
      // The form as the registration has it; the exam and the province stay.
      province.value = registration.province;
      province.disabled = true;
      EG.$("#province-hint").textContent = "报考省份不能修改；如需更改，请放弃本次报名后重新报名。";
      EG.$("#city").value = registration.city || "";
      level.value = registration.level;
      showSpecialties();
      specialty.value = registration.specialty;
      showSubjects();
      EG.$$('input[name="subject"]', form).forEach(function (box) { box.checked = registration.subjects.indexOf(box.value) >= 0; });
      EG.$("#work_years").value = registration.work_years === null || registration.work_years === undefined ? "" : String(registration.work_years);
      EG.$("[data-submit]", form).textContent = "保存修改";
      const back = EG.$("[data-back]");
      back.href = "/registrations/" + registration.registration_id;
      back.hidden = false;
      if (registration.status === "rejected" && (registration.reasons || []).length) {
        EG.alert(alert, "资格审核未通过，请根据以下原因修改后重新确认", registration.reasons.map(function (r) { return r.message; }), null);
      }
    } else if (existing) {
      EG.alert(alert, "您已在本浏览器提交过该考试的报名（报名号 " + existing + "）。", null, null);
      alert.appendChild(statusLink(existing));
    }
    await showReviewPoints(registration ? registration.review_point : null);

    function values() {
      const chosenSubjects = EG.$$('input[name="subject"]:checked', form).map(function (box) { return box.value; });
      const years = EG.$("#work_years").value.trim();
      return {
        province: province.value, city: EG.$("#city").value.trim(), level: level.value, specialty: specialty.value,
        subjects: chosenSubjects, work_years: years === "" ? undefined : Number(years),
        review_point: reviewPoint.value ? Number(reviewPoint.value) : null,
      };
    }

    async function create(body) {
      body.exam_id = examId;
      if (!body.city) delete body.city;
      if (!body.subjects.length) delete body.subjects;
      if (body.review_point === null) delete body.review_point;
      const created = await EG.api("POST", "/api/v1/registrations", { json: body });
      if (created.status === 401) return EG.toLogin(true);
      if (!created.ok && created.error.code === "agreement_required") {  // a newer 网上报名协议 to accept first
        return location.assign("/agreement?next=" + encodeURIComponent(location.pathname + location.search));
      }
      if (!created.ok) {
        EG.showError(form, created, { labels: LABELS });
        const known = EG.registrations.get(examId);
        if (created.error.code === "already_registered" && known) alert.appendChild(statusLink(known));
        if (created.error.code === "registration_closed") {
          const d = created.error.details;
          alert.appendChild(EG.el("p", { text: "报名时间：" + EG.time(d.opens_at) + " 至 " + EG.time(d.closes_at) }));
        }
        return;
      }
      const registrationId = created.data.registration_id;
      EG.registrations.put(examId, registrationId);
      location.assign("/registrations/" + registrationId + "?from=enrol");
    }

    async function change(body) {
      // A PATCH leaves out what it does not name: an emptied field is named here rather than kept unchanged.
      const missing = {};
      if (!body.city) missing.city = "required";
      if (!body.subjects.length) missing.subjects = "required";
      if (body.work_years === undefined) missing.work_years = "required";
      if (Object.keys(missing).length) {
        return EG.showError(form, { status: 422, error: { code: "validation_failed", message: "填写的信息有误，请检查后重试",
                                                          details: { fields: missing } } }, { labels: LABELS });
      }
      delete body.province;
      const changed = await EG.api("PATCH", "/api/v1/registrations/" + registration.registration_id, { json: body });
      if (changed.status === 401) return EG.toLogin(true);
      if (!changed.ok) {
        EG.showError(form, changed, { labels: LABELS });
        if (changed.error.code === "registration_locked") alert.appendChild(statusLink(registration.registration_id, "返回报名状态"));
        return;
      }
      location.assign("/registrations/" + registration.registration_id + "?from=edit");
    }

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(form);
      const body = values();
      await EG.busy(form, function () { return editing ? change(body) : create(body); });
    });
  });
})();
