/* 证书查询: verify a certificate by its number and holder's name, download the signed PDF, check a PDF's signature. */
(function () {
  "use strict";

  const EG = window.EG;
  const LABELS = { cert_no: "证书编号", name: "持证人姓名", captcha: "安全验证" };
  const REASONS = {
    not_pdf: "该文件不是 PDF 文件。",
    unsigned: "该文件没有电子证书签名。",
    malformed: "该文件的签名已损坏或文件被追加了内容。",
    unknown_key: "该文件不是由本系统签发的电子证书。",
    mismatch: "签名与文件内容不符：文件已被修改。",
  };

  document.addEventListener("DOMContentLoaded", function () {
    const form = EG.$("[data-form]");
    const captcha = EG.captchaOf(form);
    const result = EG.$("[data-result]");
    // The QR code on an electronic certificate opens this page with its number.
    const fromLink = new URLSearchParams(location.search).get("cert_no");
    if (fromLink) {
      EG.$("#cert_no").value = fromLink;
      EG.$("#name").focus();
    }

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(form);
      result.hidden = true;
      const v = EG.formValues(form);
      const body = { cert_no: v.cert_no || undefined, name: v.name || undefined };
      await EG.busy(form, async function () {
        const proof = await captcha.value();
        if (proof === null) return;
        if (proof !== undefined) body.captcha = proof;
        const found = await EG.api("POST", "/api/v1/certificates/verify", { json: body, token: null });
        if (found.status !== 422) captcha.renew();
        if (!found.ok) {
          EG.showError(form, found, { labels: LABELS, fieldFor: { captcha_invalid: "captcha" } });
          return;
        }
        const cert = found.data;
        EG.$("[data-result-summary]").textContent = "经核验，该证书真实有效。";
        EG.dl(EG.$("[data-certificate]"), [
          ["证书编号", cert.cert_no], ["持证人姓名", cert.name], ["考试名称", cert.exam.name],
          ["资格级别", cert.level.name], ["批准日期", cert.approved_on], ["管理号", cert.management_no],
        ]);
        EG.expiringLink(EG.$("[data-pdf]"), cert.pdf_url, "certificate-" + cert.cert_no + ".pdf", function () {
          result.hidden = true;
          EG.alert(EG.$("[data-alert]", form), "下载链接已过期，请重新查询证书。", null, null);
          EG.$("[data-alert]", form).focus();
        });
        result.hidden = false;
        result.focus();
      });
    });

    const check = EG.$("[data-check-form]");
    const verdict = EG.$("[data-verdict]", check);
    check.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(check);
      verdict.hidden = true;
      const file = EG.$("#file", check).files[0];
      if (!file) {
        EG.fieldError(check, "file", "请选择电子证书 PDF 文件");
        EG.$("#file", check).focus();
        return;
      }
      await EG.busy(check, async function () {
        const checked = await EG.api("POST", "/api/v1/certificates/check-pdf",
                                     { body: file, contentType: "application/pdf", token: null });
        if (!checked.ok) {
          EG.showError(check, checked, { labels: { file: "电子证书文件" } });
          return;
        }
        const answer = checked.data;
        verdict.className = "verdict " + (answer.valid ? "pass" : "fail");
        verdict.textContent = answer.valid
          ? "验签通过：该文件是证书编号 " + answer.cert_no + " 的电子证书，内容未被修改。"
          : "验签未通过：" + (REASONS[answer.reason] || answer.reason);
        verdict.hidden = false;
      });
    });
  });
})();
