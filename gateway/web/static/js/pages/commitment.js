/* 报名须知与告知承诺: the exam's notice, then its commitment text. 我已阅知并同意 signs the commitment at the
 * version shown and confirms the registration (报名信息确认, the automatic review); 暂不提交 goes back to the
 * status page with the draft kept; 放弃报名 cancels it.
 *
 * A candidate in the integrity archive may not sign (403 commitment_not_allowed, reason integrity_record):
 * the page says so and offers the general procedure (confirm without signing; a person reviews). A major
 * outside the level's lists (422 major_mismatch_unacknowledged) shows the allowed majors and asks for an
 * acknowledgement before confirming again. Without an approved photo (409 photo_required) the page says what
 * the photo lacks and links the photo page; the signature already made is kept.
 */
(function () {
  "use strict";

  const EG = window.EG;

  document.addEventListener("DOMContentLoaded", async function () {
    EG.requireSession();
    const registrationId = location.pathname.split("/")[2];
    const statusPage = EG.registrationPath(registrationId);
    const alert = EG.$("[data-alert]");
    const status = EG.$("[data-status]");
    const summary = EG.$("[data-summary]");
    const actions = EG.$("[data-main-actions]");
    const agree = EG.$("[data-agree]");
    const refusal = EG.$("[data-refusal]");
    const mismatch = EG.$("[data-mismatch]");
    let registration = null;
    let commitment = null; // the text in force: {version, title, text}, or null when the exam has none
    let working = false;

    function failed(result) {
      if (result.status === 401) { EG.toLogin(true); return; }
      status.textContent = "";
      EG.alert(alert, result.error.message, null, result.retryAfterS);
      alert.focus();
    }

    function signedNow() {
      return Boolean(commitment && registration.commitment && registration.commitment.version === commitment.version);
    }

    function showAgree() {
      agree.textContent = commitment && !signedNow() ? "我已阅知并同意" : "确认报名信息并提交审核";
      const signed = EG.$("[data-signed]");
      signed.hidden = !signedNow();
      if (signedNow()) signed.textContent = "您已于 " + EG.time(registration.commitment.signed_at) + " 签署本告知承诺书，确认报名信息即可提交审核。";
    }

    async function loadDocument(kind) {
      const found = await EG.api("GET", "/api/v1/exams/" + registration.exam_id + "/documents/" + kind, { token: null });
      return found.ok ? found.data : null;
    }

    function showCommitment() {
      const section = EG.$("[data-commitment-section]");
      section.hidden = !commitment;
      if (!commitment) return;
      EG.$("[data-commitment-title]").textContent = commitment.title;
      EG.$("[data-commitment-version]").textContent = "第 " + commitment.version + " 版";
      EG.paragraphs(EG.$("[data-commitment-text]"), commitment.text);
    }

    async function busy(work) {
      if (working) return;
      working = true;
      const buttons = EG.$$("[data-main-actions] button, [data-general], [data-mismatch] button");  // not the dialog's
      buttons.forEach(function (b) { b.disabled = true; });
      try { await work(); } finally {
        working = false;
        buttons.forEach(function (b) { b.disabled = false; });
      }
    }

    function showRefusal(error) {
      const until = error.details && error.details.until;
      EG.$("[data-refusal-text]").textContent = error.message + (until ? "（诚信档案记录期至 " + until + "）" : "") + "。";
      refusal.hidden = false;
      agree.hidden = true;
      status.textContent = "";
      refusal.focus();
    }

    function showMismatch(error) {
      const details = error.details || {};
      EG.$("[data-mismatch-text]").textContent = error.message + "。如确认继续报名，请勾选下方声明，报名将交由考试机构人工审核。";
      EG.dl(EG.$("[data-mismatch-majors]"), [
        ["您的所学专业", details.major],
        ["本专业", (details.majors_same || []).join("、") || "—"],
        ["相近专业", (details.majors_related || []).join("、") || "—"],
      ]);
      mismatch.hidden = false;
      refusal.hidden = true;
      agree.hidden = true;
      status.textContent = "";
      mismatch.focus();
    }

    async function confirm(acknowledge) {
      status.textContent = "正在确认报名信息并进行资格审核…";
      const confirmed = await EG.api("POST", "/api/v1/registrations/" + registrationId + "/confirm",
                                     { json: acknowledge ? { acknowledge_major_mismatch: true } : {} });
      if (confirmed.ok) {
        status.textContent = "报名信息已确认，正在前往报名状态页面…";
        location.assign(statusPage + "?from=confirm");
        return;
      }
      const code = confirmed.error.code;
      if (code === "major_mismatch_unacknowledged") return showMismatch(confirmed.error);
      failed(confirmed);
      if (code === "photo_required") {
        alert.appendChild(EG.el("p", {}, [EG.el("a", { className: "button secondary", href: "/photo?registration=" + registrationId,
                                                       text: confirmed.error.details.photo_status ? "查看报名照片" : "上传报名照片" })]));
        showAgree();  // signed just before: the button now confirms only
      }
      if (code === "commitment_required") {
        commitment = commitment || await loadDocument("commitment");
        showCommitment();
        showAgree();
      }
    }

    async function sign() {
      status.textContent = "正在签署告知承诺书…";
      const signed = await EG.api("POST", "/api/v1/registrations/" + registrationId + "/commitment",
                                  { json: { version: commitment.version } });
      if (signed.ok) {
        registration.commitment = { version: signed.data.version, signed_at: signed.data.signed_at };
        return confirm(false);
      }
      const error = signed.error;
      if (error.code === "commitment_not_allowed" && error.details.reason === "integrity_record") return showRefusal(error);
      // The province reviews every registration without the commitment route: confirm by the general procedure.
      if (error.code === "commitment_not_allowed") return confirm(false);
      failed(signed);
      if (error.code === "document_version_changed") {
        commitment = await loadDocument("commitment");
        showCommitment();
        showAgree();
        EG.$("[data-commitment-section]").scrollIntoView();
      }
    }

    const loaded = await EG.api("GET", "/api/v1/registrations/" + registrationId);
    if (loaded.status === 401) return EG.toLogin(true);
    if (!loaded.ok) {
      summary.textContent = "";
      EG.alert(alert, loaded.error.message, null, loaded.retryAfterS);
      return;
    }
    registration = loaded.data;
    if (registration.status !== "draft" && registration.status !== "rejected") {
      location.replace(statusPage);  // confirmed already (or over): its status page says what comes next
      return;
    }
    const exams = await EG.exams();
    const exam = exams.ok ? exams.data.find(function (e) { return e.id === registration.exam_id; }) : null;
    summary.textContent = (exam ? exam.name + " · " : "") + "报名号 " + registrationId +
      " · 请认真阅读以下内容，确认报名信息后系统将进行资格审核。";
    const texts = await Promise.all([loadDocument("notice"), loadDocument("commitment")]);
    const notice = texts[0];
    commitment = texts[1];
    if (notice) {
      EG.$("[data-notice-title]").textContent = notice.title;
      EG.paragraphs(EG.$("[data-notice-text]"), notice.text);
      EG.$("[data-notice-section]").hidden = false;
    }
    showCommitment();
    if (!notice && !commitment) status.textContent = "本考试未发布报名须知。请核对报名信息后确认。";
    showAgree();
    EG.$("[data-later]").href = statusPage;
    EG.$("[data-later-hint]").hidden = false;
    actions.hidden = false;

    agree.addEventListener("click", function () {
      alert.hidden = true;
      busy(function () { return commitment && !signedNow() ? sign() : confirm(false); });
    });
    EG.$("[data-general]").addEventListener("click", function () {
      alert.hidden = true;
      busy(function () { return confirm(false); });
    });
    mismatch.addEventListener("submit", function (event) {
      event.preventDefault();
      EG.clearErrors(mismatch);
      if (!EG.$("#acknowledge").checked) {
        EG.fieldError(mismatch, "acknowledge", "请勾选此项以确认继续报名");
        EG.$("#acknowledge").focus();
        return;
      }
      busy(function () { return confirm(true); });
    });
    EG.$("[data-cancel]").addEventListener("click", function () {
      busy(async function () {
        const result = await EG.cancelRegistration(registration);
        if (!result) return;
        if (!result.ok) return failed(result);
        location.assign(statusPage);
      });
    });
  });
})();
