/* 网上报名协议 after sign-in: a newer agreement is in force than the one the account accepted (GET /api/v1/me,
 * agreement.required), so it is shown and accepted (POST /api/v1/me/agreement) before going on to ``?next=``.
 *
 * The sign-in page comes here when the profile says so, and so does the enrolment page on a 409
 * agreement_required. A 409 agreement_version_changed (yet another version published meanwhile) shows the
 * newer one to accept. 暂不同意 signs out: enrolling is refused until the agreement in force is accepted.
 */
(function () {
  "use strict";

  const EG = window.EG;

  document.addEventListener("DOMContentLoaded", async function () {
    if (!EG.requireSession()) return;
    const next = EG.safeNext(new URLSearchParams(location.search).get("next"), "/");
    const lead = EG.$("[data-lead]");
    const pageAlert = EG.$("[data-page-alert]");
    const notice = EG.$("[data-notice]");
    const section = EG.$("[data-agreement]");
    const form = EG.$("[data-form]");
    const done = EG.$("[data-done]");
    let shown = null;  // the version on the page

    EG.$("[data-continue]").href = next;

    function failed(result) {
      if (result.status === 401) { EG.toLogin(true); return; }
      EG.alert(pageAlert, result.error.message, null, result.retryAfterS);
      pageAlert.focus();
    }

    function finished(text) {
      section.hidden = true;
      lead.textContent = text;
      done.hidden = false;
    }

    async function load() {
      const [me, agreement] = await Promise.all([EG.api("GET", "/api/v1/me"),
                                                 EG.api("GET", "/api/v1/documents/agreement", { token: null })]);
      if (!me.ok) return failed(me);
      if (agreement.status === 404) return finished("目前没有需要同意的网上报名协议。");
      if (!agreement.ok) return failed(agreement);
      const accepted = me.data.agreement || {};
      shown = agreement.data;
      if (accepted.accepted_version === shown.version) {
        return finished("您已于 " + EG.time(accepted.accepted_at) + " 同意《" + shown.title + "》（第 " + shown.version + " 版）。");
      }
      lead.textContent = accepted.accepted_version
        ? "《" + shown.title + "》已更新（您此前同意的是第 " + accepted.accepted_version + " 版）。请阅读新版本，同意后继续使用网上报名。"
        : "请阅读《" + shown.title + "》，同意后继续使用网上报名。";
      EG.$("[data-agreement-title]").textContent = shown.title;
      EG.$("[data-agreement-version]").textContent = "第 " + shown.version + " 版";
      EG.paragraphs(EG.$("[data-agreement-text]"), shown.text);
      EG.$("[data-accept-text]").textContent = "我已阅读并同意《" + shown.title + "》（第 " + shown.version + " 版）";
      EG.$("#accept").checked = false;
      section.hidden = false;
      return undefined;
    }

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(form);
      notice.textContent = "";
      if (!EG.$("#accept").checked) {
        EG.fieldError(form, "accept", "请阅读协议，勾选同意后再继续");
        EG.$("#accept").focus();
        return;
      }
      await EG.busy(form, async function () {
        const result = await EG.api("POST", "/api/v1/me/agreement", { json: { version: shown.version } });
        if (result.status === 401) return EG.toLogin(true);
        if (result.ok) {
          location.assign(next);
          return;
        }
        if (result.error.code === "agreement_version_changed") {
          await load();
          EG.alert(pageAlert, result.error.message);
          pageAlert.focus();
          return;
        }
        EG.showError(form, result, {});
      });
    });

    EG.$("[data-decline]").addEventListener("click", async function () {
      await EG.api("DELETE", "/api/v1/sessions/current");
      EG.session.clear();
      location.assign("/");
    });

    await load();
  });
})();
