/* 考生登录: username, password and the captcha; on success back to where the candidate was going. */
(function () {
  "use strict";

  const EG = window.EG;

  document.addEventListener("DOMContentLoaded", function () {
    const form = EG.$("[data-form]");
    const captcha = EG.captchaOf(form);
    const params = new URLSearchParams(location.search);
    const notice = EG.$("[data-notice]");
    if (params.get("registered")) {
      notice.textContent = "注册成功，请登录。";
      notice.hidden = false;
      EG.$("#username").value = params.get("registered");
      EG.$("#password").focus();
    } else if (params.get("expired")) {
      notice.textContent = "登录已失效，请重新登录。";
      notice.hidden = false;
    } else if (params.get("reset")) {
      notice.textContent = "密码已重新设置，请使用新密码登录。";
      notice.hidden = false;
    }
    if (params.get("username") && !params.get("registered")) EG.$("#username").value = params.get("username");
    if (EG.session.token() && !params.get("expired")) {
      notice.textContent = "您已登录为 " + EG.session.username() + "；重新登录将替换当前账号。";
      notice.hidden = false;
    }

    /* The account's failed sign-ins asked for a harder captcha (details.captcha): show that kind from now on. */
    function requireKind(kind) {
      captcha.mode = kind;
      captcha.kind = kind;
      captcha.container.hidden = false;
      captcha.build();
      captcha.start();
    }

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(form);
      const values = EG.formValues(form);
      let missing = false;
      ["username", "password"].forEach(function (name) {
        if (!values[name]) { EG.fieldError(form, name, "此项必填"); missing = true; }
      });
      if (missing) {
        EG.alert(EG.$("[data-alert]", form), "请填写用户名和密码。");
        form.querySelector('[aria-invalid="true"]').focus();
        return;
      }
      await EG.busy(form, async function () {
        const body = { username: values.username, password: values.password };
        const proof = await captcha.value();
        if (proof === null) return;
        if (proof !== undefined) body.captcha = proof;
        const result = await EG.api("POST", "/api/v1/sessions", { json: body, token: null });
        const required = result.error && result.error.code === "captcha_required" && (result.error.details || {}).captcha;
        if (required) requireKind(required);
        else if (result.status !== 422) captcha.renew();
        if (!result.ok) {
          EG.showError(form, result, { labels: { username: "用户名", password: "密码" },
                                       fieldFor: { captcha_invalid: "captcha", invalid_credentials: "password" } });
          if (required) captcha.answer.focus();  // the alert says why; the image is loading beside it
          return;
        }
        EG.session.save(result.data.token, values.username);
        const target = EG.safeNext(params.get("next"), "/");
        // A newer 网上报名协议 than the one accepted is read and accepted first (the agreement page goes on).
        const me = await EG.api("GET", "/api/v1/me");
        const agreement = me.ok && me.data.agreement;
        location.assign(agreement && agreement.required ? "/agreement?next=" + encodeURIComponent(target) : target);
      });
    });
  });
})();
