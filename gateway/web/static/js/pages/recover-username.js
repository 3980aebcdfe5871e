/* 找回用户名: name, id number and the bound phone, proven by a code sent to the phone (POST /api/v1/sms-codes,
 * purpose recover_username) → the username (POST /api/v1/username-recoveries).
 *
 * A code is sent only to a phone that has an account, and the answer is the same either way (202); any
 * mismatch of name, id number, phone and code is one answer (400 code_invalid), shown next to the code with
 * what to check.
 */
(function () {
  "use strict";

  const EG = window.EG;
  const LABELS = { name: "姓名", id_number: "证件号码", phone: "手机号码", code: "短信验证码", captcha: "安全验证" };

  document.addEventListener("DOMContentLoaded", function () {
    const form = EG.$("[data-form]");
    const result = EG.$("[data-result]");
    const captcha = EG.captchaIn(EG.$('[data-captcha="username_recoveries.create"]', form));
    const smsCaptcha = EG.captchaIn(EG.$('[data-captcha="sms_codes.create"]', form));
    if (smsCaptcha) smsCaptcha.label.textContent = "获取验证码前的安全验证";
    new EG.SmsCodeButton({
      button: EG.$("[data-send-code]", form), form: form, purpose: "recover_username", errorFor: "phone",
      phone: function () { return EG.$("#phone").value; }, status: EG.$("[data-code-status]", form),
      codeInput: EG.$("#code"), captcha: smsCaptcha, sentText: "如该号码已绑定账号，验证码已发送至 ",
    });

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(form);
      result.hidden = true;
      const values = EG.formValues(form);
      const body = {};
      ["name", "id_number", "phone", "code"].forEach(function (name) { if (values[name]) body[name] = values[name]; });
      await EG.busy(form, async function () {
        const proof = await captcha.value();
        if (proof === null) return;
        if (proof !== undefined) body.captcha = proof;
        const found = await EG.api("POST", "/api/v1/username-recoveries", { json: body, token: null });
        if (found.status !== 422) captcha.renew();
        if (found.ok) {
          EG.$("[data-username]", result).textContent = found.data.username;
          EG.$("[data-login]", result).href = "/login?username=" + encodeURIComponent(found.data.username);
          result.hidden = false;
          result.focus();
          return;
        }
        if (found.error.code === "captcha_invalid") captcha.error.textContent = found.error.message;
        EG.showError(form, found, {
          labels: LABELS, fieldFor: { code_invalid: "code" },
          messages: { code_invalid: "验证码错误或已失效，或者姓名、证件号码、手机号码与账号不一致，请核对后重试" },
        });
      });
    });
  });
})();
