/* 找回密码: by the security question, or by a code sent to the bound phone; then a new password.
 *
 * By question: name and id number → the question (POST /api/v1/password-resets/question; an unknown id number
 * gets a decoy, so the page cannot and does not tell) → the answer and the new password (…/{reset_id}).
 * By SMS: name, id number and phone → 202 whether or not a code was sent (…/sms) → the code and the new
 * password (…/sms/confirm). A finished reset goes to the sign-in page. Each form's captcha widget is made
 * when the form is first shown, so hidden forms solve nothing.
 */
(function () {
  "use strict";

  const EG = window.EG;
  const INTERVAL_S = 60;
  const LABELS = { name: "姓名", id_number: "证件号码", phone: "手机号码", answer: "答案", code: "短信验证码",
                   new_password: "新密码", captcha: "安全验证" };

  document.addEventListener("DOMContentLoaded", function () {
    const pageAlert = EG.$("[data-page-alert]");
    const questionStart = EG.$("[data-question-start]");
    const questionFinish = EG.$("[data-question-finish]");
    const smsStart = EG.$("[data-sms-start]");
    const smsFinish = EG.$("[data-sms-finish]");
    const resend = EG.$("[data-resend]");
    let resetId = null;
    let sentTo = "";  // the phone the code was sent to
    let resendTimer = null;

    function captchaOf(form) { return EG.captchaIn(EG.$("[data-captcha]", form)); }

    function show(form) {
      [questionStart, questionFinish, smsStart, smsFinish].forEach(function (other) {
        if (other.closest("[data-method]") === form.closest("[data-method]")) other.hidden = other !== form;
      });
      captchaOf(form);
    }

    function chooseMethod(method) {
      EG.$$("[data-method]").forEach(function (section) { section.hidden = section.getAttribute("data-method") !== method; });
      pageAlert.hidden = true;
      const section = EG.$('[data-method="' + method + '"]');
      show(EG.$("form:not([hidden])", section) || EG.$("form", section));
    }

    EG.$$('input[name="method"]').forEach(function (radio) {
      radio.addEventListener("change", function () { if (radio.checked) chooseMethod(radio.value); });
    });

    /** The body's captcha from ``form``'s widget: false when the form must stop (the widget says why). */
    async function withCaptcha(form, body) {
      const proof = await captchaOf(form).value();
      if (proof === null) return false;
      if (proof !== undefined) body.captcha = proof;
      return true;
    }

    function bodyOf(form, names) {
      const values = EG.formValues(form);
      const body = {};
      names.forEach(function (name) { if (values[name]) body[name] = values[name]; });
      return body;
    }

    function passwordsDiffer(form) {
      const values = EG.formValues(form);
      if (values.new_password === values.new_password_again) return false;
      EG.fieldError(form, "new_password_again", "两次输入的新密码不一致");
      EG.alert(EG.$("[data-alert]", form), "两次输入的新密码不一致，请重新输入。");
      EG.$('[name="new_password_again"]', form).focus();
      return true;
    }

    function failed(form, result, fieldFor) {
      const captcha = captchaOf(form);
      if (result.error.code === "captcha_invalid") captcha.error.textContent = result.error.message;
      EG.showError(form, result, { labels: LABELS, fieldFor: fieldFor || {} });
    }

    // --- by the security question ---------------------------------------------------------------------------

    questionStart.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(questionStart);
      const body = bodyOf(questionStart, ["name", "id_number"]);
      await EG.busy(questionStart, async function () {
        if (!await withCaptcha(questionStart, body)) return;
        const result = await EG.api("POST", "/api/v1/password-resets/question", { json: body, token: null });
        if (result.status !== 422) captchaOf(questionStart).renew();
        if (!result.ok) return failed(questionStart, result);
        resetId = result.data.reset_id;
        EG.$("[data-question]", questionFinish).textContent = result.data.question;
        show(questionFinish);
        EG.$("#q_answer").focus();
        return undefined;
      });
    });

    questionFinish.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(questionFinish);
      if (passwordsDiffer(questionFinish)) return;
      const body = bodyOf(questionFinish, ["answer", "new_password"]);
      await EG.busy(questionFinish, async function () {
        if (!await withCaptcha(questionFinish, body)) return;
        const result = await EG.api("POST", "/api/v1/password-resets/question/" + encodeURIComponent(resetId),
                                    { json: body, token: null });
        if (result.status !== 422) captchaOf(questionFinish).renew();
        if (result.ok) {
          location.assign("/login?reset=1");
          return;
        }
        if (result.error.code === "reset_attempts_exhausted") {  // start again: a new question, a new reset
          show(questionStart);
          EG.alert(EG.$("[data-alert]", questionStart), result.error.message);
          EG.$("[data-alert]", questionStart).focus();
          return;
        }
        failed(questionFinish, result, { reset_invalid: "answer" });
      });
    });

    EG.$("[data-back]", questionFinish).addEventListener("click", function () {
      show(questionStart);
      EG.$("#q_name").focus();
    });

    // --- by SMS ------------------------------------------------------------------------------------------------

    function holdResend(seconds) {
      clearInterval(resendTimer);
      let left = Math.max(1, Math.ceil(seconds));
      const tick = function () {
        if (left <= 0) {
          clearInterval(resendTimer);
          resend.disabled = false;
          resend.textContent = "重新获取验证码";
          return;
        }
        resend.disabled = true;
        resend.textContent = "重新获取（" + left + " 秒）";
        left -= 1;
      };
      tick();
      resendTimer = setInterval(tick, 1000);
    }

    smsStart.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(smsStart);
      const body = bodyOf(smsStart, ["name", "id_number", "phone"]);
      await EG.busy(smsStart, async function () {
        if (!await withCaptcha(smsStart, body)) return;
        const result = await EG.api("POST", "/api/v1/password-resets/sms", { json: body, token: null });
        if (result.status !== 422) captchaOf(smsStart).renew();
        if (!result.ok) {
          if (result.status === 429 && (result.error.details || {}).reason === "sms_per_phone") {
            EG.fieldError(smsStart, "phone", "该手机号码获取验证码过于频繁（每分钟 1 次，每小时最多 5 次）");
          }
          failed(smsStart, result);
          return;
        }
        const minutes = Math.round(((result.data && result.data.expires_in) || 300) / 60);
        EG.$("[data-sms-sent]", smsFinish).textContent = "如果姓名、证件号码和手机号码与账号一致，验证码已发送至 " +
          EG.maskPhone(EG.phoneOf(body.phone)) + "，" + minutes + " 分钟内有效。";
        sentTo = body.phone;
        holdResend(INTERVAL_S);
        show(smsFinish);
        EG.$("#s_code").focus();
      });
    });

    // Another code is asked for on the first step (its captcha, its answers), once the minute has passed.
    resend.addEventListener("click", function () {
      show(smsStart);
      EG.$("[data-submit]", smsStart).focus();
    });

    smsFinish.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(smsFinish);
      if (passwordsDiffer(smsFinish)) return;
      const body = bodyOf(smsFinish, ["code", "new_password"]);
      body.phone = sentTo;
      await EG.busy(smsFinish, async function () {
        if (!await withCaptcha(smsFinish, body)) return;
        const result = await EG.api("POST", "/api/v1/password-resets/sms/confirm", { json: body, token: null });
        if (result.status !== 422) captchaOf(smsFinish).renew();
        if (result.ok) {
          location.assign("/login?reset=1");
          return;
        }
        failed(smsFinish, result, { code_invalid: "code" });
      });
    });

    chooseMethod("question");
  });
})();
