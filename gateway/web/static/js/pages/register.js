/* 考生注册: the account form; every problem the API names is shown next to its input. */
(function () {
  "use strict";

  const EG = window.EG;
  const LABELS = {
    username: "用户名", password: "密码", name: "姓名", id_type: "证件类型", id_number: "证件号码", phone: "手机号码",
    email: "电子邮箱", security_question: "密码保护问题", security_answer: "密码保护答案", educations: "学历",
    "educations.0.cert_no": "学历证书编号", "educations.0.school": "毕业学校", "educations.0.graduated_on": "毕业年月",
    "educations.0.major": "所学专业", "educations.0.level": "学历层次", "educations.0.mode": "学习形式", captcha: "安全验证",
  };

  document.addEventListener("DOMContentLoaded", function () {
    const form = EG.$("[data-form]");
    const captcha = EG.captchaOf(form);

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(form);
      const v = EG.formValues(form);
      if (v.password !== v.password_again) {
        EG.fieldError(form, "password_again", "两次输入的密码不一致");
        EG.alert(EG.$("[data-alert]", form), "两次输入的密码不一致，请重新输入。");
        EG.$("#password_again").focus();
        return;
      }
      const body = {
        username: v.username, password: v.password, name: v.name, id_type: v.id_type, id_number: v.id_number,
        phone: v.phone, email: v.email, security_question: v.security_question, security_answer: v.security_answer,
        educations: [{ cert_no: v.cert_no, school: v.school, graduated_on: v.graduated_on, major: v.major,
                       level: v.level, mode: v.mode }],
      };
      // Empty fields are left out, so the API names them "required" next to each input.
      Object.keys(body).forEach(function (key) { if (body[key] === "") delete body[key]; });
      Object.keys(body.educations[0]).forEach(function (key) { if (body.educations[0][key] === "") delete body.educations[0][key]; });
      await EG.busy(form, async function () {
        const proof = await captcha.value();
        if (proof === null) return;
        if (proof !== undefined) body.captcha = proof;
        const result = await EG.api("POST", "/api/v1/accounts", { json: body, token: null });
        // The body is validated before the captcha is looked at: a 422 leaves the captcha unspent.
        if (result.status !== 422) captcha.renew();
        if (!result.ok) {
          EG.showError(form, result, { labels: LABELS, fieldFor: { captcha_invalid: "captcha" } });
          return;
        }
        location.assign("/login?registered=" + encodeURIComponent(v.username));
      });
    });
  });
})();
