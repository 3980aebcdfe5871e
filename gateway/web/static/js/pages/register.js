/* 考生注册: the notice (注册须知) and the agreement (网上报名协议) first, then the account form; every problem
 * the API names is shown next to its input.
 *
 * The texts are shown while they are published (404: none, nothing to accept); their acceptance sends the
 * agreement's version as agreement_version, and a 409 agreement_version_changed shows the new version to
 * accept again (the form keeps what was typed, the SMS code stays usable). The phone is proven by a code
 * (获取验证码: POST /api/v1/sms-codes, purpose register); the name and id number are typed a second time
 * (confirmation, 422 mismatch); degrees are optional records added and removed in the page.
 */
(function () {
  "use strict";

  const EG = window.EG;
  const MAX_DEGREES = 5;
  const LABELS = {
    username: "用户名", password: "密码", name: "姓名", id_type: "证件类型", id_number: "证件号码", phone: "手机号码",
    email: "电子邮箱", security_question: "密码保护问题", security_answer: "密码保护答案", educations: "学历",
    "educations.0.cert_no": "学历证书编号", "educations.0.school": "毕业学校", "educations.0.graduated_on": "毕业年月",
    "educations.0.major": "所学专业", "educations.0.level": "学历层次", "educations.0.mode": "学习形式", captcha: "安全验证",
    confirmation: "确认信息", "confirmation.name": "再次输入的姓名", "confirmation.id_number": "再次输入的证件号码",
    sms_code: "短信验证码", degrees: "学位", agreement_version: "网上报名协议",
  };

  document.addEventListener("DOMContentLoaded", async function () {
    const form = EG.$("[data-form]");
    const pageAlert = EG.$("[data-page-alert]");
    const loading = EG.$("[data-loading]");
    const documents = EG.$("[data-documents]");
    const acceptForm = EG.$("[data-accept-form]");
    const accountCaptcha = EG.captchaIn(EG.$('[data-captcha="accounts.create"]', form));
    const smsCaptcha = EG.captchaIn(EG.$('[data-captcha="sms_codes.create"]', form));
    if (smsCaptcha) smsCaptcha.label.textContent = "获取验证码前的安全验证";
    new EG.SmsCodeButton({
      button: EG.$("[data-send-code]", form), form: form, purpose: "register", errorFor: "phone",
      phone: function () { return EG.$("#phone").value; }, status: EG.$("[data-code-status]", form),
      codeInput: EG.$("#sms_code"), captcha: smsCaptcha,
    });
    let texts = { notice: null, agreement: null };  // the versions in force shown, null when none is published

    // --- the notice and the agreement --------------------------------------------------------------------

    function showDocument(kind, found) {
      const article = EG.$('[data-doc="' + kind + '"]', documents);
      article.hidden = !found;
      if (!found) return;
      EG.$("[data-doc-title]", article).textContent = found.title;
      EG.$("[data-doc-version]", article).textContent = "第 " + found.version + " 版";
      EG.paragraphs(EG.$("[data-doc-text]", article), found.text);
    }

    function acceptSentence() {
      const notice = texts.notice ? "《" + texts.notice.title + "》" : "";
      const agreement = texts.agreement ? "《" + texts.agreement.title + "》" : "";
      if (notice && agreement) return "我已阅读" + notice + "，并同意" + agreement;
      return agreement ? "我已阅读并同意" + agreement : "我已阅读并知晓" + notice;
    }

    function showForm() {
      documents.hidden = true;
      form.hidden = false;
      const accepted = EG.$("[data-accepted]", form);
      accepted.hidden = !(texts.notice || texts.agreement);
      if (texts.agreement) {
        EG.$("[data-accepted-text]", accepted).textContent = "您已阅读并同意《" + texts.agreement.title + "》（第 " +
          texts.agreement.version + " 版）" + (texts.notice ? "，已阅读《" + texts.notice.title + "》。" : "。");
      } else if (texts.notice) {
        EG.$("[data-accepted-text]", accepted).textContent = "您已阅读《" + texts.notice.title + "》。";
      }
    }

    /** The texts in force; false (the reason in the page's alert, with 重新加载) when they cannot be had. */
    async function loadDocuments() {
      loading.hidden = false;
      const found = await Promise.all(["notice", "agreement"].map(function (kind) {
        return EG.api("GET", "/api/v1/documents/" + kind, { token: null });
      }));
      loading.hidden = true;
      const failed = found.find(function (result) { return !result.ok && result.status !== 404; });
      if (failed) {
        EG.alert(pageAlert, "注册须知加载失败：" + failed.error.message, null, failed.retryAfterS);
        pageAlert.appendChild(EG.el("button", { type: "button", className: "secondary", text: "重新加载",
                                                onclick: function () { pageAlert.hidden = true; loadDocuments(); } }));
        pageAlert.focus();
        return false;
      }
      texts = { notice: found[0].ok ? found[0].data : null, agreement: found[1].ok ? found[1].data : null };
      showDocument("notice", texts.notice);
      showDocument("agreement", texts.agreement);
      if (!texts.notice && !texts.agreement) {
        showForm();
        return true;
      }
      EG.$("[data-accept-text]", acceptForm).textContent = acceptSentence();
      EG.$("#accept").checked = false;
      form.hidden = true;
      documents.hidden = false;
      return true;
    }

    acceptForm.addEventListener("submit", function (event) {
      event.preventDefault();
      EG.clearErrors(acceptForm);
      if (!EG.$("#accept").checked) {
        EG.fieldError(acceptForm, "accept", "请阅读以上内容，勾选同意后再继续");
        EG.$("#accept").focus();
        return;
      }
      pageAlert.hidden = true;
      showForm();
      EG.$("#username").focus();
    });

    EG.$("[data-reread]", form).addEventListener("click", function () {
      form.hidden = true;
      documents.hidden = false;
      EG.$("#accept").checked = false;
      documents.focus();
    });

    // --- degrees ------------------------------------------------------------------------------------------

    const degreeList = EG.$("[data-degrees]", form);
    const addDegree = EG.$("[data-add-degree]", form);

    function degreeValues() {
      return EG.$$("[data-degree]", degreeList).map(function (record, index) {
        return EG.recordValues("degrees", record, "degrees." + index);
      });
    }

    function renderDegrees(records) {
      degreeList.replaceChildren.apply(degreeList, records.map(function (values, index) {
        const number = index + 1;
        const remove = EG.el("button", { type: "button", className: "danger", text: "删除学位 " + number,
                                         onclick: function () {
                                           const kept = degreeValues();
                                           kept.splice(index, 1);
                                           renderDegrees(kept);
                                           addDegree.focus();
                                         } });
        return EG.el("fieldset", { className: "record", "data-degree": true }, [
          EG.el("legend", { text: "学位 " + number }),
        ].concat(EG.recordFields("degrees", "degrees." + index, "degree-" + number, values, "（学位 " + number + "）"),
                 [EG.el("div", { className: "actions" }, [remove])]));
      }));
      addDegree.hidden = records.length >= MAX_DEGREES;
    }

    addDegree.addEventListener("click", function () {
      const records = degreeValues();
      records.push({});
      renderDegrees(records);
      EG.$("[data-degree]:last-of-type input", degreeList).focus();
    });

    // --- the account ----------------------------------------------------------------------------------------

    function compact(object) {
      Object.keys(object).forEach(function (key) { if (object[key] === "") delete object[key]; });
      return object;
    }

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
      // Empty fields are left out, so the API names them "required" next to each input.
      const body = compact({
        username: v.username, password: v.password, name: v.name, id_type: v.id_type, id_number: v.id_number,
        phone: v.phone, email: v.email, security_question: v.security_question, security_answer: v.security_answer,
        sms_code: v.sms_code,
        educations: [compact({ cert_no: v.cert_no, school: v.school, graduated_on: v.graduated_on, major: v.major,
                               level: v.level, mode: v.mode })],
        confirmation: compact({ name: v.name_again, id_number: v.id_number_again }),
        degrees: degreeValues(),
      });
      if (texts.agreement) body.agreement_version = texts.agreement.version;
      await EG.busy(form, async function () {
        const proof = await accountCaptcha.value();
        if (proof === null) return;
        if (proof !== undefined) body.captcha = proof;
        const result = await EG.api("POST", "/api/v1/accounts", { json: body, token: null });
        // The body is validated before the captcha is looked at: a 422 leaves the captcha unspent.
        if (result.status !== 422) accountCaptcha.renew();
        if (result.ok) {
          location.assign("/login?registered=" + encodeURIComponent(v.username));
          return;
        }
        const code = result.error.code;
        if (code === "agreement_version_changed") {
          // A new version was published meanwhile: read and accept it again; what was typed is kept.
          if (await loadDocuments()) {
            EG.alert(pageAlert, result.error.message + "（第 " + result.error.details.version + " 版）");
            pageAlert.focus();
          }
          return;
        }
        if (code === "captcha_invalid") accountCaptcha.error.textContent = result.error.message;
        EG.showError(form, result, {
          labels: LABELS, fieldFor: { code_invalid: "sms_code" },
          messages: { code_invalid: "短信验证码错误或已失效，请核对后重新输入，或重新获取验证码" },
        });
      });
    });

    renderDegrees([]);
    await loadDocuments();
  });
})();
