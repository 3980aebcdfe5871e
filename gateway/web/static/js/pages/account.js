/* 注册维护: the profile with every education and degree record and its verification status; records added and
 * deleted (not a verified one); the phone changed with a code to the current and to the new number; the
 * security question and the email changed with the password.
 *
 * A phone or security-question change ends every session of the account, this one too: the answer carries
 * the page's new session token, kept as the sign-in page keeps one (docs/api.md, "Account maintenance").
 */
(function () {
  "use strict";

  const EG = window.EG;
  const ID_TYPES = { resident_id: "居民身份证", passport: "护照", military_officer: "军官证",
                     hk_macau_permit: "港澳居民来往内地通行证", taiwan_permit: "台湾居民来往大陆通行证" };
  const KINDS = {
    educations: { label: "学历", path: "/api/v1/me/educations", id: "education_id" },
    degrees: { label: "学位", path: "/api/v1/me/degrees", id: "degree_id" },
  };
  const LABELS = { old_code: "当前号码的验证码", new_phone: "新手机号码", new_code: "新号码的验证码", question: "新的问题",
                   answer: "新的答案", password: "登录密码", email: "电子邮箱", cert_no: "证书编号", school: "学校",
                   graduated_on: "毕业年月", obtained_on: "获得学位年月", major: "专业", level: "层次", mode: "学习形式",
                   kind: "学位类型" };

  document.addEventListener("DOMContentLoaded", async function () {
    if (!EG.requireSession()) return;
    const pageAlert = EG.$("[data-page-alert]");
    const notice = EG.$("[data-notice]");
    let profile = null;

    function failed(result) {
      if (result.status === 401) { EG.toLogin(true); return; }
      EG.alert(pageAlert, result.error.message, null, result.retryAfterS);
      pageAlert.focus();
    }

    function say(text, focus) {
      pageAlert.hidden = true;
      notice.textContent = text;
      if (focus) focus.focus();
    }

    // --- the profile and the records -------------------------------------------------------------------------

    function renderProfile() {
      const agreement = profile.agreement || {};
      let agreed = "—";
      if (agreement.accepted_version) {
        agreed = "已同意第 " + agreement.accepted_version + " 版（" + EG.time(agreement.accepted_at) + "）";
      }
      if (agreement.required) agreed += "；第 " + agreement.current_version + " 版待同意";
      EG.dl(EG.$("[data-profile]"), [
        ["用户名", profile.username], ["姓名", profile.name], ["证件类型", ID_TYPES[profile.id_type] || profile.id_type],
        ["证件号码", profile.id_number], ["手机号码", profile.phone], ["电子邮箱", profile.email],
        ["密码保护问题", profile.security_question], ["注册时间", EG.time(profile.created_at)], ["网上报名协议", agreed],
      ]);
      EG.$("[data-agreement-link]").hidden = !agreement.required;
      EG.$("[data-current-phone]").textContent = EG.maskPhone(profile.phone);
    }

    function recordCard(kind, record, index) {
      const spec = KINDS[kind];
      const status = record.status || "not_checked";
      const title = spec.label + " " + (index + 1);
      const details = EG.el("dl", { className: "details" });
      EG.dl(details, EG.recordRows(kind, record).concat([["核验状态", EG.RECORD_STATUS[status] || status]]));
      const action = status === "verified"
        ? EG.el("p", { className: "hint", text: "已核验，不能删除" })
        : EG.el("button", { type: "button", className: "danger", text: "删除" + title,
                            onclick: function () { removeRecord(kind, record, title); } });
      return EG.el("li", { className: "record-card", "data-record": record[spec.id] }, [
        EG.el("h3", {}, [EG.el("span", { text: title }),
                         EG.el("span", { className: "badge badge--" + status, text: EG.RECORD_STATUS[status] || status })]),
        details,
        EG.el("div", { className: "actions" }, [action]),
      ]);
    }

    function renderRecords(kind) {
      const list = EG.$('[data-records="' + kind + '"] [data-record-list]');
      const records = profile[kind] || [];
      if (!records.length) {
        list.replaceChildren(EG.el("li", { className: "muted", text: "暂无" + KINDS[kind].label + "信息。" }));
        return;
      }
      list.replaceChildren.apply(list, records.map(function (record, index) { return recordCard(kind, record, index); }));
    }

    async function load() {
      const me = await EG.api("GET", "/api/v1/me");
      if (!me.ok) { failed(me); return false; }
      profile = me.data;
      renderProfile();
      renderRecords("educations");
      renderRecords("degrees");
      return true;
    }

    async function removeRecord(kind, record, title) {
      const spec = KINDS[kind];
      const sure = await EG.ask({ title: "删除" + title, yes: "确定删除",
                                  text: "确定删除" + title + "（证书编号 " + record.cert_no + "）吗？删除后不能恢复。" });
      if (!sure) return;
      const result = await EG.api("DELETE", spec.path + "/" + record[spec.id]);
      if (result.status === 401) return EG.toLogin(true);
      if (!result.ok) {
        failed(result);
        if (result.status === 404 || result.status === 409) await load();
        return;
      }
      await load();
      say("已删除" + title + "（证书编号 " + record.cert_no + "）。", EG.$('[data-records="' + kind + '"]'));
    }

    Object.keys(KINDS).forEach(function (kind) {
      const section = EG.$('[data-records="' + kind + '"]');
      const form = EG.$("[data-add-form]", section);
      const fields = EG.$("[data-add-fields]", form);
      fields.replaceChildren.apply(fields, EG.recordFields(kind, "", "add-" + kind));
      form.addEventListener("submit", async function (event) {
        event.preventDefault();
        EG.clearErrors(form);
        notice.textContent = "";
        await EG.busy(form, async function () {
          const result = await EG.api("POST", KINDS[kind].path, { json: EG.recordValues(kind, form, "") });
          if (result.status === 401) return EG.toLogin(true);
          if (!result.ok) {
            EG.showError(form, result, { labels: LABELS, fieldFor: { duplicate_cert_no: "cert_no" } });
            return;
          }
          fields.replaceChildren.apply(fields, EG.recordFields(kind, "", "add-" + kind));
          await load();
          say("已添加" + KINDS[kind].label + "信息（证书编号 " + result.data.cert_no + "），状态：" +
              (EG.RECORD_STATUS[result.data.status] || result.data.status) + "。", section);
        });
      });
    });

    // --- the phone --------------------------------------------------------------------------------------------

    const phoneForm = EG.$("[data-phone-form]");
    const smsCaptcha = EG.captchaIn(EG.$("[data-captcha]", phoneForm));
    if (smsCaptcha) smsCaptcha.label.textContent = "获取验证码前的安全验证";
    new EG.SmsCodeButton({
      button: EG.$("[data-send-old]", phoneForm), form: phoneForm, purpose: "change_phone", errorFor: "old_code",
      phone: function () { return profile ? profile.phone : ""; }, status: EG.$("[data-old-status]", phoneForm),
      codeInput: EG.$("#old_code"), captcha: smsCaptcha, sentText: "验证码已发送至当前号码 ",
    });
    new EG.SmsCodeButton({
      button: EG.$("[data-send-new]", phoneForm), form: phoneForm, purpose: "change_phone", errorFor: "new_phone",
      phone: function () { return EG.$("#new_phone").value; }, status: EG.$("[data-new-status]", phoneForm),
      codeInput: EG.$("#new_code"), captcha: smsCaptcha, sentText: "验证码已发送至新号码 ",
    });

    /** A change that ended every session: keep the page's new one. */
    function renewed(data) {
      EG.session.save(data.token, EG.session.username());
    }

    phoneForm.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(phoneForm);
      notice.textContent = "";
      const v = EG.formValues(phoneForm);
      const body = { new_phone: v.new_phone, old_code: v.old_code, new_code: v.new_code };
      Object.keys(body).forEach(function (key) { if (body[key] === "") delete body[key]; });
      await EG.busy(phoneForm, async function () {
        const result = await EG.api("PUT", "/api/v1/me/phone", { json: body });
        if (result.status === 401) return EG.toLogin(true);
        if (!result.ok) {
          if (result.error.code === "code_invalid") {  // one answer for either code: both are marked
            EG.fieldError(phoneForm, "old_code", "请核对当前号码收到的验证码");
            EG.fieldError(phoneForm, "new_code", "请核对新号码收到的验证码");
          }
          EG.showError(phoneForm, result, {
            labels: LABELS, fieldFor: { phone_taken: "new_phone" },
            messages: { code_invalid: "验证码错误或已失效（两个验证码中至少有一个不正确），请核对后重新输入，或重新获取" },
          });
          return;
        }
        renewed(result.data);
        EG.$$("input", phoneForm).forEach(function (input) { input.value = ""; });
        EG.$$(".code-status", phoneForm).forEach(function (node) { node.textContent = ""; });
        await load();
        say("手机号码已更换为 " + result.data.phone + "。其他设备上的登录已退出，请使用新号码接收验证码。", notice);
      });
    });

    // --- the security question and the email ---------------------------------------------------------------------

    const questionForm = EG.$("[data-question-form]");
    questionForm.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(questionForm);
      notice.textContent = "";
      const v = EG.formValues(questionForm);
      const body = { question: v.question, answer: v.answer, password: v.password };
      Object.keys(body).forEach(function (key) { if (body[key] === "") delete body[key]; });
      await EG.busy(questionForm, async function () {
        const result = await EG.api("PUT", "/api/v1/me/security-question", { json: body });
        if (result.status === 401) return EG.toLogin(true);
        if (!result.ok) {
          EG.showError(questionForm, result, { labels: LABELS, fieldFor: { password_incorrect: "password" } });
          return;
        }
        renewed(result.data);
        EG.$$("input", questionForm).forEach(function (input) { input.value = ""; });
        await load();
        say("密码保护问题已修改为“" + result.data.security_question + "”。其他设备上的登录已退出。", notice);
      });
    });

    const emailForm = EG.$("[data-email-form]");
    emailForm.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(emailForm);
      notice.textContent = "";
      const v = EG.formValues(emailForm);
      const body = { email: v.email, password: v.password };
      Object.keys(body).forEach(function (key) { if (body[key] === "") delete body[key]; });
      await EG.busy(emailForm, async function () {
        const result = await EG.api("PUT", "/api/v1/me/email", { json: body });
        if (result.status === 401) return EG.toLogin(true);
        if (!result.ok) {
          EG.showError(emailForm, result, { labels: LABELS, fieldFor: { password_incorrect: "password" } });
          return;
        }
        EG.$$("input", emailForm).forEach(function (input) { input.value = ""; });
        await load();
        say("电子邮箱已修改为 " + result.data.email + "。", notice);
      });
    });

    await load();
  });
})();
