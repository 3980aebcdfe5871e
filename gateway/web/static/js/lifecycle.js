/* The registration lifecycle, shared by its pages: status names, the confirmation dialog, 放弃报名,
 * an exam's texts shown as paragraphs.
 *
 * Statuses (docs/api.md, "Registration lifecycle"): draft → (confirm) approved | under_review |
 * onsite_review | rejected; under review → (an operator) approved | rejected; approved → paid;
 * cancelled and expired end it. 放弃报名 after payment is a request the exam authority decides (202).
 */
(function () {
  "use strict";

  const EG = window.EG;

  EG.STATUS_NAMES = {
    draft: "待确认", under_review: "网上审核中", onsite_review: "待现场审核", approved: "审核通过",
    rejected: "审核未通过", paid: "已缴费", cancelled: "已放弃报名", expired: "已过期",
  };
  EG.statusName = function (status) { return EG.STATUS_NAMES[status] || status; };

  EG.registrationPath = function (registrationId, page) {
    return "/registrations/" + registrationId + (page ? "/" + page : "");
  };

  /** Ask in the page's <dialog data-dialog>: resolves to true when the candidate chose ``yes``. */
  EG.ask = function (options) {
    const dialog = EG.$("[data-dialog]");
    EG.$("[data-dialog-title]", dialog).textContent = options.title;
    EG.$("[data-dialog-text]", dialog).textContent = options.text;
    EG.$("[data-dialog-yes]", dialog).textContent = options.yes;
    EG.$("[data-dialog-no]", dialog).textContent = options.no || "取消";
    const opener = document.activeElement;
    return new Promise(function (resolve) {
      dialog.addEventListener("close", function closed() {
        dialog.removeEventListener("close", closed);
        if (opener && opener.focus) opener.focus();
        resolve(dialog.returnValue === "yes");
      });
      dialog.returnValue = "";
      dialog.showModal();
      EG.$("[data-dialog-no]", dialog).focus();  // the safe choice first
    });
  };

  /** 放弃报名, asked first: the API's result, or null when the candidate changed their mind. */
  EG.cancelRegistration = async function (registration) {
    const paid = registration.status === "paid";
    const agreed = await EG.ask(paid ? {
      title: "申请放弃报名",
      text: "您已缴费。放弃报名的申请将提交考试机构审核，审核通过后退还报名费，准考证同时作废。确定提交申请吗？",
      yes: "提交放弃报名申请",
    } : {
      title: "放弃报名",
      text: "放弃报名后，本次报名即被取消，已保留的考点座位将释放，且不能恢复。确定放弃报名吗？",
      yes: "确定放弃报名",
    });
    if (!agreed) return null;
    return EG.api("POST", "/api/v1/registrations/" + registration.registration_id + "/cancel");
  };

  /** A text of the exam (notice, commitment) as paragraphs, one per line; nothing is parsed as HTML. */
  EG.paragraphs = function (target, text) {
    const lines = String(text || "").split(/\r?\n/).filter(function (line) { return line.trim(); });
    target.replaceChildren.apply(target, lines.map(function (line) { return EG.el("p", { text: line }); }));
  };

  /** The subjects' names of an exam, by code. */
  EG.subjectNames = function (exam) {
    const names = {};
    if (exam) exam.levels.forEach(function (l) { l.specialties.forEach(function (s) { s.subjects.forEach(function (j) { names[j.code] = j.name; }); }); });
    return names;
  };

  /** The level's and the specialty's names: [level, specialty]. */
  EG.levelNames = function (exam, levelCode, specialtyCode) {
    const level = exam ? exam.levels.find(function (l) { return l.code === levelCode; }) : null;
    const specialty = level ? level.specialties.find(function (s) { return s.code === specialtyCode; }) : null;
    return [level ? level.name : levelCode, specialty ? specialty.name : specialtyCode];
  };
})();
