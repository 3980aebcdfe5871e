/* 运行控制台 · 资格审核: the review queue (by exam, province, review point and state), one registration with
 * the candidate's education, approve or reject it with reasons, and approve many at once.
 *
 * Sign-in: js/console-signin.js (the console's token: signed in on /console, this page opens signed in;
 * otherwise it asks for the token the same way). A decision is sent with If-Match: the version the details
 * were read at (their ETag), so a registration someone else decided or the candidate changed meanwhile
 * answers 412 instead of being overruled.
 */
(function () {
  "use strict";

  const EG = window.EG;
  const PAGE = 50;
  const STATUS_NAMES = {
    draft: "待确认", under_review: "网上审核中", onsite_review: "待现场审核", approved: "审核通过",
    rejected: "审核未通过", paid: "已缴费", cancelled: "已放弃报名", expired: "已过期",
  };
  const UNDER_REVIEW = ["under_review", "onsite_review"];
  const EDUCATION = { secondary: "中专", college: "大专", bachelor: "本科", master: "硕士研究生", doctorate: "博士研究生" };
  const MODES = { full_time: "全日制", part_time: "非全日制", self_study: "自学考试", online: "网络教育" };
  const REVIEW_MODES = { auto: "自动审核", online: "网上审核", onsite: "现场审核" };
  const ACTIONS = {
    edit: "修改报名信息", sign_commitment: "签署告知承诺书", confirm: "确认报名信息", decide: "审核决定",
    withdraw: "撤回确认", cancel: "放弃报名", withdraw_commitment: "撤回告知承诺", request_cancellation: "申请放弃报名",
    approve_cancellation: "批准放弃报名并退费", pay: "缴费",
    "score_review.requested": "申请成绩复核", "score_review.unchanged": "成绩复核：成绩维持",
    "score_review.corrected": "成绩复核：成绩已更正",
  };
  const BULK_RESULTS = { already_decided: "已被他人处理", not_found: "不存在或不在您的审核范围内" };

  let me = null;
  let exams = [];
  let reasons = {};
  let items = [];
  let nextAfter = null;
  let selected = new Set();
  let detail = null; // {id, version, status}
  const points = {};  // exam id → its review points

  const signIn = EG.consoleSignIn({ page: "[data-reviews]", route: "admin.reviews.list", what: "资格审核",
                                    scope: "审核范围", onEnter: enter });
  const admin = signIn.admin;
  const alertBox = signIn.alertBox;
  const say = signIn.say;
  const problem = signIn.problem;

  async function enter(signedIn) {
    me = signedIn;
    const listed = await EG.exams();
    exams = listed.ok ? listed.data : [];
    const listedReasons = await admin("GET", "/admin/api/v1/review-reasons");
    reasons = listedReasons.ok ? listedReasons.data : {};
    renderFilter();
    renderReasonChoices();
    await loadQueue(true);
  }

  // --- names ----------------------------------------------------------------------------------------------

  function examOf(id) { return exams.find(function (e) { return e.id === id; }) || null; }
  function examName(id) { const exam = examOf(id); return exam ? exam.name : "考试 " + id; }
  function levelText(item) {
    const exam = examOf(item.exam_id);
    const level = exam ? exam.levels.find(function (l) { return l.code === item.level; }) : null;
    const specialty = level ? level.specialties.find(function (s) { return s.code === item.specialty; }) : null;
    return (level ? level.name : item.level) + " · " + (specialty ? specialty.name : item.specialty);
  }
  function subjectsText(item) {
    const names = {};
    const exam = examOf(item.exam_id);
    if (exam) exam.levels.forEach(function (l) { l.specialties.forEach(function (s) { s.subjects.forEach(function (j) { names[j.code] = j.name; }); }); });
    return item.subjects.map(function (code) { return (names[code] || code) + "（" + code + "）"; }).join("、");
  }

  async function reviewPoints(examId) {
    if (!points[examId]) {
      const listed = await EG.api("GET", "/api/v1/exams/" + examId + "/review-points", { token: null });
      points[examId] = listed.ok ? listed.data : [];
    }
    return points[examId];
  }

  async function reviewPointName(item) {
    if (!item.review_point) return "未选择";
    const found = (await reviewPoints(item.exam_id)).find(function (p) { return p.review_point_id === item.review_point; });
    return found ? found.name + "（" + found.city + "）" : "审核点 " + item.review_point;
  }

  // --- the filter -------------------------------------------------------------------------------------------

  function option(value, text, chosen) {
    return EG.el("option", { value: value, text: text, selected: String(value) === String(chosen || "") });
  }

  function renderFilter() {
    const params = new URLSearchParams(location.search);
    const examSelect = EG.$("#filter-exam");
    examSelect.replaceChildren.apply(examSelect, [option("", "全部考试")].concat(exams.map(function (exam) {
      return option(String(exam.id), exam.name, params.get("exam_id"));
    })));
    const provinces = me.provinces !== null ? me.provinces : Object.keys(exams.reduce(function (all, exam) {
      exam.provinces.forEach(function (code) { all[code] = true; });
      return all;
    }, {})).sort();
    const provinceSelect = EG.$("#filter-province");
    provinceSelect.replaceChildren.apply(provinceSelect, [option("", me.provinces === null ? "全部省份" : "所辖全部省份")].concat(
      provinces.map(function (code) { return option(code, EG.province(code) + "（" + code + "）", params.get("province")); })));
    const status = params.get("status");
    if (status) EG.$("#filter-status").value = status;
    renderPointFilter(params.get("review_point"));
  }

  async function renderPointFilter(chosen) {
    const select = EG.$("#filter-point");
    const examId = EG.$("#filter-exam").value;
    const province = EG.$("#filter-province").value;
    const listed = examId ? (await reviewPoints(Number(examId))).filter(function (p) { return !province || p.province === province; }) : [];
    select.replaceChildren.apply(select, [option("", "全部审核点")].concat(listed.map(function (p) {
      return option(String(p.review_point_id), p.name + "（" + EG.province(p.province) + " · " + p.city + "）", chosen);
    })));
    select.disabled = !examId;
  }

  function query(after) {
    const form = EG.$("[data-filter]");
    const values = EG.formValues(form);
    const params = new URLSearchParams();
    ["exam_id", "province", "review_point", "status"].forEach(function (name) { if (values[name]) params.set(name, values[name]); });
    params.set("limit", String(PAGE));
    if (after) params.set("after", String(after));
    return params;
  }

  // --- the queue --------------------------------------------------------------------------------------------

  function renderBulk() {
    const button = EG.$("[data-bulk]");
    button.textContent = selected.size ? "批量通过所选（" + selected.size + " 条）" : "批量通过所选";
    button.disabled = !selected.size;
    const all = EG.$("[data-select-all]");
    const choosable = items.filter(function (item) { return UNDER_REVIEW.indexOf(item.status) >= 0; });
    all.checked = choosable.length > 0 && choosable.every(function (item) { return selected.has(item.registration_id); });
    all.disabled = !choosable.length;
  }

  function queueRow(item) {
    const id = item.registration_id;
    const choosable = UNDER_REVIEW.indexOf(item.status) >= 0;
    const box = choosable ? EG.el("input", {
      type: "checkbox", checked: selected.has(id), "aria-label": "选择报名 " + id + "（" + item.candidate_name + "）",
      onchange: function (event) {
        if (event.currentTarget.checked) selected.add(id); else selected.delete(id);
        renderBulk();
      },
    }) : null;
    const cells = [
      EG.el("td", {}, [box]),
      EG.el("td", { text: String(id) }),
      EG.el("td", { text: item.candidate_name }),
      EG.el("td", { text: item.id_number }),
      EG.el("td", { text: examName(item.exam_id) }),
      EG.el("td", { text: EG.province(item.province) + " · " + item.city }),
      EG.el("td", { text: levelText(item) }),
      EG.el("td", { text: STATUS_NAMES[item.status] || item.status }),
      EG.el("td", { text: EG.time(item.submitted_at) }),
      EG.el("td", {}, [EG.el("button", { type: "button", className: "secondary", text: "查看",
                                         "aria-label": "查看报名 " + id + "（" + item.candidate_name + "）",
                                         onclick: function () { openDetail(id); } })]),
    ];
    return EG.el("tr", { "data-registration": String(id), className: detail && detail.id === id ? "is-open" : null }, cells);
  }

  function renderQueue() {
    const body = EG.$("[data-queue]");
    const rows = items.map(queueRow);
    if (!rows.length) rows.push(EG.el("tr", {}, [EG.el("td", { colspan: "10", className: "muted", text: "没有符合条件的报名" })]));
    body.replaceChildren.apply(body, rows);
    EG.$("[data-count]").textContent = "共显示 " + items.length + " 条" + (nextAfter ? "，还有更多" : "");
    EG.$("[data-more]").hidden = !nextAfter;
    renderBulk();
  }

  async function loadQueue(reset) {
    const listed = await admin("GET", "/admin/api/v1/reviews?" + query(reset ? null : nextAfter).toString());
    if (!listed.ok) {
      problem(listed, "加载审核队列失败");
      return;
    }
    if (reset) {
      items = [];
      selected = new Set();
    }
    items = items.concat(listed.data.registrations);
    const shown = new Set(items.map(function (item) { return item.registration_id; }));
    selected.forEach(function (id) { if (!shown.has(id)) selected.delete(id); });
    nextAfter = listed.data.next_after;
    renderQueue();
  }

  async function bulkApprove() {
    const ids = Array.from(selected);
    if (!ids.length) return;
    alertBox().hidden = true;
    const button = EG.$("[data-bulk]");
    button.disabled = true;
    const done = await admin("POST", "/admin/api/v1/reviews/approve", { json: { registration_ids: ids } });
    if (!done.ok) {
      renderBulk();
      return problem(done, "批量审核失败");
    }
    const others = Object.keys(done.data.results).filter(function (id) { return done.data.results[id].result !== "approved"; });
    say("已批量审核通过 " + done.data.approved + " 条报名。");
    if (others.length) {
      EG.alert(alertBox(), "以下报名未能通过，请刷新后查看", others.map(function (id) {
        const result = done.data.results[id];
        return "报名 " + id + "：" + (BULK_RESULTS[result.result] || result.result) +
          (result.status ? "（当前状态：" + (STATUS_NAMES[result.status] || result.status) + "）" : "");
      }), null);
    }
    await loadQueue(true);
    if (detail && ids.indexOf(detail.id) >= 0) await openDetail(detail.id, true);
  }

  // --- one registration ---------------------------------------------------------------------------------------

  function renderReasonChoices() {
    const box = EG.$("[data-reason-choices]");
    box.replaceChildren.apply(box, Object.keys(reasons).map(function (code) {
      return EG.el("label", { className: "choice" }, [
        EG.el("input", { type: "checkbox", name: "reason", value: code }), reasons[code],
      ]);
    }));
  }

  function resetDecision() {
    const form = EG.$("[data-decision]");
    EG.clearErrors(form);
    EG.$$('input[name="reason"]', form).forEach(function (box) { box.checked = false; });
    EG.$("#other-reasons").value = "";
  }

  async function openDetail(id, keepMessages) {
    const loaded = await admin("GET", "/admin/api/v1/registrations/" + id);
    if (!loaded.ok) return problem(loaded, "加载报名详情失败");
    const found = loaded.data;
    const etag = (loaded.headers.get("ETag") || "").replace(/^W\//, "").replace(/"/g, "");
    detail = { id: found.registration_id, version: etag || String(found.version), status: found.status };
    if (!keepMessages) resetDecision();
    EG.$("[data-detail-title]").textContent = "报名详情：" + found.candidate_name + "（报名号 " + found.registration_id + "）";
    EG.dl(EG.$("[data-detail-list]"), [
      ["姓名", found.candidate_name],
      ["证件号码", found.id_number],
      ["考试", examName(found.exam_id)],
      ["级别 · 专业", levelText(found)],
      ["报考科目", subjectsText(found)],
      ["省份 · 城市", EG.province(found.province) + " · " + found.city],
      ["相关工作年限", found.work_years + " 年"],
      ["审核点", await reviewPointName(found)],
      ["审核方式", REVIEW_MODES[found.review_mode] || "—"],
      ["告知承诺", found.commitment ? "已签署（第 " + found.commitment.version + " 版，" + EG.time(found.commitment.signed_at) + "）" : "未签署"],
      ["状态", STATUS_NAMES[found.status] || found.status],
      ["确认时间", EG.time(found.submitted_at)],
      ["版本", found.version],
    ]);
    const educations = found.educations.map(function (e) {
      return EG.el("tr", {}, [e.level, e.major, e.school, e.graduated_on.slice(0, 7), e.cert_no, e.mode].map(function (value, index) {
        const text = index === 0 ? EDUCATION[value] || value : index === 5 ? MODES[value] || value : value;
        return EG.el("td", { text: text });
      }));
    });
    if (!educations.length) educations.push(EG.el("tr", {}, [EG.el("td", { colspan: "6", className: "muted", text: "未填写学历信息" })]));
    EG.$("[data-educations]").replaceChildren.apply(EG.$("[data-educations]"), educations);
    const reasonList = EG.$("[data-detail-reasons]");
    const given = found.reasons || [];
    reasonList.replaceChildren.apply(reasonList, given.length ? given.map(function (r) { return EG.el("li", { text: r.message }); })
                                                              : [EG.el("li", { className: "muted", text: "无" })]);
    const history = EG.$("[data-detail-history]");
    history.replaceChildren.apply(history, found.history.map(function (e) {
      const why = (e.reasons || []).map(function (r) { return r.message; }).join("；");
      return EG.el("li", { text: EG.time(e.at, true) + " · " + (ACTIONS[e.action] || e.action) + " → " +
                                 (STATUS_NAMES[e.to] || e.to) + " · " + e.actor + (why ? " · " + why : "") });
    }));
    const open = UNDER_REVIEW.indexOf(found.status) >= 0;
    EG.$("[data-decision-fields]").hidden = !open;
    EG.$("[data-decided]").hidden = open;
    EG.$("[data-decided]").textContent = open ? "" : "该报名当前状态为“" + (STATUS_NAMES[found.status] || found.status) + "”，无需审核。";
    EG.$("[data-refresh]").hidden = true;
    EG.$$("[data-queue] tr").forEach(function (row) { row.classList.toggle("is-open", row.getAttribute("data-registration") === String(detail.id)); });
    const section = EG.$("[data-detail]");
    section.hidden = false;
    if (!keepMessages) section.focus();
  }

  async function decide(approve) {
    const form = EG.$("[data-decision]");
    EG.clearErrors(form);
    const picked = EG.$$('input[name="reason"]:checked', form).map(function (box) { return box.value; });
    const typed = EG.$("#other-reasons").value.split(/\r?\n/).map(function (line) { return line.trim(); }).filter(Boolean);
    const given = approve ? [] : picked.concat(typed);
    if (!approve && !given.length) {
      EG.fieldError(form, "reasons", "请至少选择或填写一条不通过原因");
      EG.alert(EG.$("[data-alert]", form), "审核不通过时须说明原因（见下方标注）", null, null);
      (EG.$('input[name="reason"]', form) || EG.$("#other-reasons")).focus();
      return;
    }
    const id = detail.id;
    const buttons = EG.$$("[data-approve], [data-reject]");
    buttons.forEach(function (b) { b.disabled = true; });
    const decided = await admin("POST", "/admin/api/v1/registrations/" + id + "/review", {
      json: { decision: approve ? "approve" : "reject", reasons: given },
      headers: { "If-Match": '"' + detail.version + '"' },
    });
    buttons.forEach(function (b) { b.disabled = false; });
    if (decided.status === 401) return signIn.signOut("管理令牌无效或已撤销，请重新输入。");
    if (decided.status === 412 || decided.status === 409) {
      const alert = EG.$("[data-alert]", form);
      EG.alert(alert, "已被他人处理，请刷新", [decided.error.message], null);
      EG.$("[data-refresh]").hidden = false;
      alert.focus();
      return;
    }
    if (!decided.ok) {
      EG.showError(form, decided, { labels: { reasons: "不通过原因" }, fieldFor: {} });
      return;
    }
    say("报名 " + id + " " + (approve ? "已审核通过。" : "审核不通过，原因已告知考生。"));
    selected.delete(id);
    await loadQueue(true);
    await openDetail(id);
  }

  // --- start ------------------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", function () {
    EG.$("[data-filter]").addEventListener("submit", function (event) {
      event.preventDefault();
      alertBox().hidden = true;
      loadQueue(true);
    });
    EG.$("#filter-exam").addEventListener("change", function () { renderPointFilter(null); });
    EG.$("#filter-province").addEventListener("change", function () { renderPointFilter(EG.$("#filter-point").value); });
    EG.$("[data-more]").addEventListener("click", function () { loadQueue(false); });
    EG.$("[data-bulk]").addEventListener("click", bulkApprove);
    EG.$("[data-select-all]").addEventListener("change", function (event) {
      const on = event.currentTarget.checked;
      items.forEach(function (item) {
        if (UNDER_REVIEW.indexOf(item.status) < 0) return;
        if (on) selected.add(item.registration_id); else selected.delete(item.registration_id);
      });
      renderQueue();
    });
    EG.$("[data-approve]").addEventListener("click", function () { decide(true); });
    EG.$("[data-reject]").addEventListener("click", function () { decide(false); });
    EG.$("[data-refresh]").addEventListener("click", async function () {
      alertBox().hidden = true;
      await loadQueue(true);
      await openDetail(detail.id);
      say("已刷新报名 " + detail.id + " 的最新状态。");
    });
  });
})();
