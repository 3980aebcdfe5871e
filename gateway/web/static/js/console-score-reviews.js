/* 运行控制台 · 成绩复核: the candidates' score review requests (by exam and state), one request with the
 * score before and now, answered once: unchanged, or corrected (a one-row scores import, batch
 * review-<id>), with a reason the candidate reads. Another operator's answer first is said plainly
 * (already_decided) and the list reloaded. Sign-in: js/console-signin.js.
 */
(function () {
  "use strict";

  const EG = window.EG;
  const PAGE = 50;
  const STATUS = { pending: "待处理", unchanged: "成绩维持", corrected: "成绩已更正" };
  const CONFLICTS = ["already_decided", "correction_conflict"];

  let exams = [];
  let items = [];
  let nextAfter = null;
  let detail = null;

  const signIn = EG.consoleSignIn({ page: "[data-score-reviews]", route: "admin.score_reviews.list",
                                    what: "成绩复核", onEnter: enter });

  async function enter() {
    const listed = await EG.exams();
    exams = listed.ok ? listed.data : [];
    const select = EG.$("#filter-exam");
    select.replaceChildren.apply(select, [EG.el("option", { value: "", text: "全部考试" })].concat(
      exams.map(function (exam) { return EG.el("option", { value: String(exam.id), text: exam.name }); })));
    await loadQueue(true);
  }

  function score(value) { return value === null || value === undefined ? "—" : String(value); }

  async function loadQueue(fresh) {
    const filter = EG.formValues(EG.$("[data-filter]"));
    const query = new URLSearchParams({ status: filter.status, limit: String(PAGE) });
    if (filter.exam_id) query.set("exam_id", filter.exam_id);
    if (!fresh && nextAfter) query.set("after", String(nextAfter));
    const page = await signIn.admin("GET", "/admin/api/v1/score-reviews?" + query.toString());
    if (!page.ok) return signIn.problem(page, "读取复核申请");
    items = fresh ? page.data.reviews : items.concat(page.data.reviews);
    nextAfter = page.data.next_after;
    renderQueue();
  }

  function renderQueue() {
    const rows = items.map(function (item) {
      return EG.el("tr", {}, [
        EG.el("td", { text: String(item.review_id) }),
        EG.el("td", { text: item.candidate_name }),
        EG.el("td", { text: item.id_number }),
        EG.el("td", { text: item.exam_name }),
        EG.el("td", { text: EG.province(item.province) }),
        EG.el("td", { text: item.subject_name + "（" + item.subject + "）" }),
        EG.el("td", { text: score(item.score_before) }),
        EG.el("td", { text: score(item.score_now) }),
        EG.el("td", { text: STATUS[item.status] || item.status }),
        EG.el("td", { text: EG.time(item.requested_at) }),
        EG.el("td", {}, [EG.el("button", { type: "button", className: "link-button", "data-open": String(item.review_id),
                                           text: item.status === "pending" ? "处理" : "查看",
                                           onclick: function () { openDetail(item); } })]),
      ]);
    });
    const body = EG.$("[data-queue]");
    body.replaceChildren.apply(body, rows);
    EG.$("[data-count]").textContent = items.length ? "共 " + items.length + " 条" + (nextAfter ? "（还有更多）" : "") :
      "没有符合条件的复核申请";
    EG.$("[data-more]").hidden = !nextAfter;
  }

  function openDetail(item) {
    detail = item;
    const section = EG.$("[data-detail]");
    EG.$("[data-detail-title]").textContent = "复核申请 " + item.review_id;
    EG.dl(EG.$("[data-detail-list]"), [
      ["考生", item.candidate_name + "（" + item.id_number + "）"], ["考试", item.exam_name],
      ["科目", item.subject_name + "（" + item.subject + "）"], ["满分", score(item.full_mark)],
      ["原成绩", score(item.score_before)], ["现成绩", score(item.score_now)],
      ["状态", STATUS[item.status] || item.status], ["申请时间", EG.time(item.requested_at)],
      ["复核后成绩", score(item.score_after)], ["复核说明", item.reason],
      ["处理人", item.decided_by], ["处理时间", item.decided_at ? EG.time(item.decided_at) : null],
      ["成绩导入批次", item.batch_id],
    ]);
    const form = EG.$("[data-decision]");
    EG.clearErrors(form);
    EG.$("[data-alert]", form).hidden = true;
    form.reset();
    showScore(false);
    const pending = item.status === "pending";
    EG.$("[data-decision-fields]", form).hidden = !pending;
    EG.$("[data-decided]", form).hidden = pending;
    EG.$("[data-decided]", form).textContent = pending ? "" : "该申请已处理：" + (STATUS[item.status] || item.status) + "。";
    EG.$("[data-score-hint]").textContent = "至多一位小数，不超过满分 " + score(item.full_mark) +
      "；更正将作为一条成绩导入（批次 review-" + item.review_id + "）";
    section.hidden = false;
    section.focus();
  }

  function showScore(on) {
    EG.$("[data-corrected]").hidden = !on;
    EG.$("#score").disabled = !on;
  }

  async function decide(event) {
    event.preventDefault();
    const form = event.currentTarget;
    EG.clearErrors(form);
    const v = EG.formValues(form);
    const body = { outcome: v.outcome, reason: v.reason };
    if (!v.reason) { EG.fieldError(form, "reason", "请填写复核说明"); EG.$("#reason").focus(); return; }
    if (v.outcome === "corrected") {
      if (!/^[0-9]{1,3}(\.[0-9])?$/.test(v.score || "")) {
        EG.fieldError(form, "score", "请填写成绩（至多一位小数）");
        EG.$("#score").focus();
        return;
      }
      body.score = Number(v.score);
    }
    await EG.busy(form, async function () {
      const answered = await signIn.admin("POST", "/admin/api/v1/score-reviews/" + detail.review_id + "/decision",
                                          { json: body });
      if (!answered.ok) {
        if (answered.status === 422) return EG.showError(form, answered, { labels: { score: "成绩", reason: "复核说明" } });
        signIn.problem(answered, "提交复核结果", CONFLICTS);
        if (CONFLICTS.indexOf(answered.error.code) >= 0) await loadQueue(true);
        return;
      }
      signIn.say("复核申请 " + detail.review_id + "：" + STATUS[answered.data.status] +
                 (answered.data.status === "corrected" ? "，成绩已更正为 " + answered.data.score_after : "") + "。");
      await loadQueue(true);
      openDetail(answered.data);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    EG.$("[data-filter]").addEventListener("submit", function (event) {
      event.preventDefault();
      signIn.alertBox().hidden = true;
      loadQueue(true);
    });
    EG.$("[data-more]").addEventListener("click", function () { loadQueue(false); });
    EG.$$('input[name="outcome"]').forEach(function (radio) {
      radio.addEventListener("change", function () { showScore(radio.checked && radio.value === "corrected"); });
    });
    EG.$("[data-decision]").addEventListener("submit", decide);
  });
})();
