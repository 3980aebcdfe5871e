/* 报名照片: the rules, the current photo with its status and review, the upload with a local preview, and,
 * once the photo is locked, the change request.
 *
 * The photo is sent as the body itself (PUT /api/v1/me/photo, image/jpeg); a captcha, when live config asks
 * for one, travels in the X-Captcha header. The preview is an object URL of the chosen file (revoked when
 * another is chosen): nothing leaves the browser before 上传照片. An approved photo is locked: a change
 * request granted by an operator lets exactly one new upload in (docs/api.md, "Photos").
 */
(function () {
  "use strict";

  const EG = window.EG;
  const MAX_BYTES = 2 * 1024 * 1024;
  const STATUS = { approved: "审核通过", needs_review: "待人工审核", rejected: "审核未通过" };
  const REQUEST_STATUS = { pending: "等待考试机构审核", granted: "已同意，可重新上传一次", refused: "未同意", used: "已使用" };
  const LABELS = { file: "照片文件", captcha: "安全验证", reason: "更换原因" };

  document.addEventListener("DOMContentLoaded", async function () {
    EG.requireSession();
    const pageAlert = EG.$("[data-page-alert]");
    const notice = EG.$("[data-notice]");
    const upload = EG.$("[data-upload]");
    const fileInput = EG.$("#photo-file");
    const preview = EG.$("[data-preview]");
    const previewImage = EG.$("[data-preview-image]");
    const changeBox = EG.$("[data-change]");
    const changeForm = EG.$("[data-change-form]");
    const captcha = EG.captchaOf(upload);
    const registrationId = new URLSearchParams(location.search).get("registration");
    let previewUrl = null;
    let current = null;  // GET /api/v1/me/photo, or null before the first upload

    if (registrationId && /^[1-9][0-9]{0,17}$/.test(registrationId)) {
      EG.$("[data-back-link]").href = "/registrations/" + registrationId;
      EG.$("[data-back]").hidden = false;
    }

    function failed(result) {
      if (result.status === 401) { EG.toLogin(true); return; }
      EG.alert(pageAlert, result.error.message, null, result.retryAfterS);
      pageAlert.focus();
    }

    // --- the chosen file and its preview -----------------------------------------------------------------

    function clearPreview() {
      if (previewUrl) URL.revokeObjectURL(previewUrl);
      previewUrl = null;
      previewImage.removeAttribute("src");
      preview.hidden = true;
    }

    function chosenFile() {
      return fileInput.files && fileInput.files.length ? fileInput.files[0] : null;
    }

    /** The chosen file's problem the browser can see already (type, size), or "". */
    function fileProblem(file) {
      if (!file) return "请选择要上传的照片文件";
      const jpegName = /\.jpe?g$/i.test(file.name);
      if (file.type ? file.type !== "image/jpeg" : !jpegName) return "请选择 JPG 格式的照片";
      if (file.size > MAX_BYTES) return "照片文件超过 2 MB，请压缩后再上传";
      if (!file.size) return "照片文件是空的，请重新选择";
      return "";
    }

    fileInput.addEventListener("change", function () {
      EG.clearErrors(upload);
      clearPreview();
      const file = chosenFile();
      if (!file) return;
      const problem = fileProblem(file);
      if (problem) {
        EG.fieldError(upload, "file", problem);
        return;
      }
      previewUrl = URL.createObjectURL(file);
      previewImage.src = previewUrl;
      EG.$("[data-preview-caption]").textContent = file.name + " · " + Math.max(1, Math.round(file.size / 1024)) + " KB";
      preview.hidden = false;
    });
    previewImage.addEventListener("load", function () {
      const caption = EG.$("[data-preview-caption]");
      const file = chosenFile();
      if (!file || !previewImage.naturalWidth) return;
      caption.textContent = file.name + " · " + previewImage.naturalWidth + "×" + previewImage.naturalHeight +
        " 像素 · " + Math.max(1, Math.round(file.size / 1024)) + " KB";
    });
    previewImage.addEventListener("error", function () {
      if (!previewUrl) return;
      clearPreview();
      EG.fieldError(upload, "file", "无法预览该文件，请确认是 JPG 格式的照片");
    });

    // --- the current photo ---------------------------------------------------------------------------------

    function reviewText(photo) {
      if (photo.status === "rejected") return "人工审核未通过";
      if (photo.reviewed) return "人工审核通过";
      if (photo.status === "needs_review") return "等待人工审核";
      return "系统检测通过";
    }

    function renderCurrent(photo) {
      const box = EG.$("[data-current]");
      EG.$("[data-none]").hidden = Boolean(photo);
      box.hidden = !photo;
      if (!photo) return;
      const image = EG.$("[data-current-image]");
      image.src = photo.url;
      image.alt = "当前报名照片（" + (STATUS[photo.status] || photo.status) + "）";
      const rows = [
        ["状态", STATUS[photo.status] || photo.status],
        ["审核", reviewText(photo)],
        ["上传时间", EG.time(photo.uploaded_at, true)],
        ["是否锁定", photo.locked ? "已锁定（不能自行更换）" : "未锁定（可重新上传）"],
      ];
      if (photo.review_reason) rows.splice(2, 0, ["未通过原因", photo.review_reason]);
      EG.dl(EG.$("[data-current-details]"), rows);
      const problems = photo.status === "needs_review" ? photo.messages || [] : [];
      EG.$("[data-current-problems]").hidden = !problems.length;
      const list = EG.$("[data-current-problems-list]");
      list.replaceChildren.apply(list, problems.map(function (text) { return EG.el("li", { text: text }); }));
    }

    /** Whether a new upload would be taken: no photo, one not locked, or a granted change request. */
    function mayUpload(photo) {
      if (!photo || !photo.locked) return true;
      return Boolean(photo.change_request && photo.change_request.status === "granted");
    }

    function renderUpload(photo) {
      upload.hidden = !mayUpload(photo);
      let title = "上传照片";
      if (photo && photo.locked) title = "重新上传照片（更换申请已同意，限一次）";
      else if (photo && photo.status === "rejected") title = "重新上传照片";
      else if (photo) title = "更换照片";
      EG.$("[data-upload-title]").textContent = title;
    }

    function renderChange(photo) {
      changeBox.hidden = !(photo && photo.locked);
      if (changeBox.hidden) return;
      const request = photo.change_request;
      const open = request && (request.status === "pending" || request.status === "granted");
      changeForm.hidden = Boolean(open);
      const text = !request || request.status === "used"
        ? "照片已锁定。如确需更换（例如照片不是近期照片），请填写原因提交更换申请，考试机构同意后可重新上传一次。"
        : request.status === "pending" ? "您的更换申请已提交，正在等待考试机构审核。"
          : request.status === "granted" ? "考试机构已同意您的更换申请，请在上方重新上传照片（仅限一次）。"
            : "考试机构未同意您的更换申请，照片保持不变。如有新的理由，可以再次申请。";
      EG.$("[data-change-text]").textContent = text;
      const details = EG.$("[data-change-details]");
      details.hidden = !request;
      if (!request) return;
      const rows = [
        ["申请状态", REQUEST_STATUS[request.status] || request.status],
        ["申请原因", request.reason],
        ["申请时间", EG.time(request.requested_at, true)],
      ];
      if (request.decided_at) rows.push(["处理时间", EG.time(request.decided_at, true)]);
      if (request.decision_reason) rows.push(["处理意见", request.decision_reason]);
      EG.dl(details, rows);
    }

    async function load() {
      const loaded = await EG.api("GET", "/api/v1/me/photo");
      if (loaded.status === 401) { EG.toLogin(true); return false; }
      if (!loaded.ok && loaded.status !== 404) {
        failed(loaded);
        return false;
      }
      current = loaded.ok ? loaded.data : null;
      renderCurrent(current);
      renderUpload(current);
      renderChange(current);
      return true;
    }

    // --- upload -----------------------------------------------------------------------------------------------

    /** The account's failed attempts asked for a harder captcha (details.captcha): show that kind from now on. */
    function requireKind(kind) {
      captcha.mode = kind;
      captcha.kind = kind;
      captcha.container.hidden = false;
      captcha.build();
      captcha.start();
    }

    function uploaded(result) {
      const status = result.data.status;
      fileInput.value = "";
      clearPreview();
      return load().then(function () {
        if (status === "approved") {
          notice.textContent = "照片已上传，系统检测通过，照片已锁定。" + (registrationId ? "现在可以返回报名状态页面确认报名信息。" : "");
        } else {
          const reasons = (current && current.messages) || [];
          notice.textContent = "照片已上传，待人工审核" + (reasons.length ? "：" + reasons.join("；") : "") +
            "。审核结果将在本页显示，审核通过后才能确认报名信息。";
        }
        EG.$("[data-current]").focus();
      });
    }

    upload.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(upload);
      notice.textContent = "";
      pageAlert.hidden = true;
      const file = chosenFile();
      const problem = fileProblem(file);
      if (problem) {
        EG.fieldError(upload, "file", problem);
        fileInput.focus();
        return;
      }
      await EG.busy(upload, async function () {
        const proof = await captcha.value();
        if (proof === null) return;
        const headers = proof === undefined ? {} : { "X-Captcha": JSON.stringify(proof) };
        const result = await EG.api("PUT", "/api/v1/me/photo", { body: file, contentType: "image/jpeg", headers: headers });
        const error = result.error || {};
        const required = error.code === "captcha_required" && (error.details || {}).captcha;
        if (required) requireKind(required);
        else captcha.renew();
        if (result.ok) return uploaded(result);
        if (result.status === 401) return EG.toLogin(true);
        const alert = EG.$("[data-alert]", upload);
        if (error.code === "photo_rejected") {
          EG.alert(alert, "照片不符合要求，未保存，请按提示重新拍摄或选择照片", error.details.messages || [], null);
          alert.focus();
          return;
        }
        if (error.code === "photo_locked") {  // locked meanwhile (another tab, or the one granted upload spent)
          await load();
          EG.alert(pageAlert, error.message, null, null);
          pageAlert.focus();
          return;
        }
        const messages = {
          body_too_large: "照片文件超过 2 MB，请压缩后再上传",
          unsupported_media_type: "请选择 JPG 格式的照片",
        };
        EG.showError(upload, result, { labels: LABELS, messages: messages,
                                        fieldFor: { captcha_invalid: "captcha", body_too_large: "file", unsupported_media_type: "file" } });
        if (required) captcha.answer.focus();
      });
    });

    // --- the change request --------------------------------------------------------------------------------------

    changeForm.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(changeForm);
      notice.textContent = "";
      const reason = EG.$("#change-reason").value.trim();
      if (!reason) {
        EG.fieldError(changeForm, "reason", "请填写更换照片的原因");
        EG.$("#change-reason").focus();
        return;
      }
      await EG.busy(changeForm, async function () {
        const made = await EG.api("POST", "/api/v1/me/photo/change-requests", { json: { reason: reason } });
        if (made.status === 401) return EG.toLogin(true);
        if (!made.ok) {
          EG.showError(changeForm, made, { labels: LABELS });
          if (made.status === 409) await load();
          return;
        }
        EG.$("#change-reason").value = "";
        await load();
        notice.textContent = "更换申请已提交，请等待考试机构审核。";
        changeBox.focus();
      });
    });

    await load();
  });
})();
