/* 获取验证码: a button that asks POST /api/v1/sms-codes for a code to a phone, then counts down.
 *
 * Codes to one phone are limited by the server (one a minute, five an hour, whatever the purpose:
 * docs/api.md, "Accounts and sessions"); the button waits out the minute after a code was sent, and
 * a 429 (details.reason sms_per_phone, Retry-After) is said next to the field with when to ask again,
 * the button held until then. The route's captcha, when live config asks for one, is the form's
 * widget for sms_codes.create, renewed after every request the server looked at.
 */
(function () {
  "use strict";

  const EG = window.EG;
  const INTERVAL_S = 60;
  const PHONE = /^1[3-9][0-9]{9}$/;

  /** A phone as the server stores it: full-width digits made ASCII, spaces dropped. */
  EG.phoneOf = function (value) {
    return String(value || "").normalize("NFKC").replace(/\s+/g, "");
  };

  /** "13912345678" → "139****5678". */
  EG.maskPhone = function (phone) {
    return phone && phone.length === 11 ? phone.slice(0, 3) + "****" + phone.slice(7) : phone || "";
  };

  class SmsCodeButton {
    /**
     * ``options``: button, form, purpose, phone() (the number to send to), errorFor (the field path its
     * messages go next to), status (an aria-live element), codeInput (focused once sent), captcha (an
     * EG.Captcha or null), sendingText.
     */
    constructor(options) {
      this.options = options;
      this.button = options.button;
      this.label = this.button.textContent;
      this.timer = null;
      this.button.addEventListener("click", () => this.send());
    }

    errorTarget() {
      return this.options.form.querySelector('[data-error-for="' + CSS.escape(this.options.errorFor) + '"]');
    }

    clear() {
      const target = this.errorTarget();
      if (target) target.textContent = "";
      const input = this.options.form.querySelector('[data-field="' + CSS.escape(this.options.errorFor) + '"] input');
      if (input) input.removeAttribute("aria-invalid");
      this.options.status.textContent = "";
    }

    problem(message) {
      EG.fieldError(this.options.form, this.options.errorFor, message);
    }

    /** Hold the button for ``seconds``, its label counting down. */
    countdown(seconds) {
      clearInterval(this.timer);
      let left = Math.max(1, Math.ceil(seconds));
      const tick = () => {
        if (left <= 0) {
          clearInterval(this.timer);
          this.timer = null;
          this.button.disabled = false;
          this.button.textContent = "重新获取验证码";
          return;
        }
        this.button.disabled = true;
        this.button.textContent = "重新获取（" + left + " 秒）";
        left -= 1;
      };
      tick();
      this.timer = setInterval(tick, 1000);
    }

    async send() {
      const options = this.options;
      this.clear();
      const phone = EG.phoneOf(options.phone());
      if (!PHONE.test(phone)) {
        this.problem(phone ? "请输入 11 位中国大陆手机号码" : "请先填写手机号码");
        const input = options.form.querySelector('[data-field="' + CSS.escape(options.errorFor) + '"] input');
        if (input) input.focus();
        return;
      }
      const body = { phone: phone, purpose: options.purpose };
      if (options.captcha) {
        const proof = await options.captcha.value();
        if (proof === null) return;
        if (proof !== undefined) body.captcha = proof;
      }
      this.button.disabled = true;
      this.button.setAttribute("aria-busy", "true");
      this.button.textContent = "正在发送…";
      let result;
      try {
        result = await EG.api("POST", "/api/v1/sms-codes", { json: body, token: null });
      } finally {
        this.button.removeAttribute("aria-busy");
        this.button.textContent = this.label;
        this.button.disabled = false;
      }
      if (options.captcha && result.status !== 422) options.captcha.renew();
      if (result.ok) {
        const minutes = Math.round(((result.data && result.data.expires_in) || 300) / 60);
        options.status.textContent = (options.sentText || "验证码已发送至 ") + EG.maskPhone(phone) + "，" + minutes +
          " 分钟内有效，请注意查收。";
        this.countdown(INTERVAL_S);
        if (options.codeInput) options.codeInput.focus();
        return;
      }
      const error = result.error;
      if (result.status === 429) {
        const perPhone = (error.details || {}).reason === "sms_per_phone";
        this.problem((perPhone ? "该手机号码获取验证码过于频繁（每分钟 1 次，每小时最多 5 次）。" : error.message + "。") +
                     EG.retrySentence(result.retryAfterS));
        if (result.retryAfterS) this.countdown(result.retryAfterS);
        return;
      }
      if (result.status === 422 && error.details.fields) {
        const code = error.details.fields.phone || Object.values(error.details.fields)[0];
        this.problem(EG.problem("phone", code));
        return;
      }
      if (error.code === "captcha_invalid" && options.captcha) {
        options.captcha.error.textContent = error.message;
        return;
      }
      this.problem(error.message + (result.retryAfterS ? "，" + EG.retrySentence(result.retryAfterS) : ""));
    }
  }

  EG.SmsCodeButton = SmsCodeButton;

  /** The captcha widget of one [data-captcha] container (several may share a form). */
  EG.captchaIn = function (container) {
    if (!container) return null;
    if (!container._captcha) container._captcha = new EG.Captcha(container);
    return container._captcha;
  };
})();
