/* Shared by every page: the JSON API client, the signed-in session, and error messages in Chinese.
 *
 * Pages are static shells: everything they show comes from the JSON API (docs/api.md). An API
 * error body is {"error": {"code", "message", "details"}}; its message is already Chinese, and a
 * 422's details.fields maps each field to a problem code, shown next to the input it names.
 */
(function () {
  "use strict";

  const EG = (window.EG = window.EG || {});

  // --- API ------------------------------------------------------------------------------------

  function retryAfterSeconds(value) {
    if (!value) return null;
    if (/^\d+$/.test(value.trim())) return parseInt(value, 10);
    const at = Date.parse(value);
    return Number.isNaN(at) ? null : Math.max(1, Math.ceil((at - Date.now()) / 1000));
  }

  const STATUS_MESSAGES = {
    0: "网络连接失败，请检查网络后重试",
    401: "请先登录",
    403: "无权执行此操作",
    404: "未找到相关记录",
    429: "操作过于频繁，请稍后再试",
    500: "服务内部错误，请稍后重试",
    502: "服务暂时不可用，请稍后重试",
    503: "当前访问人数过多，请稍后重试",
    504: "服务响应超时，请稍后重试",
  };

  /** Call the API: resolves to {ok, status, data, error, retryAfterS, headers}; never throws. */
  EG.api = async function (method, path, options) {
    const opts = options || {};
    const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
    let body;
    if (opts.json !== undefined) {
      headers["Content-Type"] = opts.contentType || "application/json";
      body = JSON.stringify(opts.json);
    } else if (opts.body !== undefined) {  // raw bytes (a File or Blob), e.g. the photo upload
      headers["Content-Type"] = opts.contentType;
      body = opts.body;
    }
    if (opts.token !== undefined) {
      if (opts.token) headers.Authorization = "Bearer " + opts.token;
    } else if (EG.session.token()) {
      headers.Authorization = "Bearer " + EG.session.token();
    }
    let resp;
    try {
      resp = await fetch(path, { method: method, headers: headers, body: body, cache: "no-store", credentials: "same-origin" });
    } catch (err) {
      return { ok: false, status: 0, data: null, headers: new Headers(), retryAfterS: null,
               error: { code: "network_error", message: STATUS_MESSAGES[0], details: {} } };
    }
    const result = { ok: resp.ok, status: resp.status, data: null, error: null, headers: resp.headers,
                     retryAfterS: retryAfterSeconds(resp.headers.get("Retry-After")) };
    if (resp.status !== 204 && (resp.headers.get("Content-Type") || "").indexOf("json") >= 0) {
      try { result.data = await resp.json(); } catch (err) { result.data = null; }
    }
    if (!resp.ok) {
      const error = result.data && result.data.error;
      result.error = error && error.code ? error : {
        code: "http_" + resp.status,
        message: STATUS_MESSAGES[resp.status] || "请求失败（" + resp.status + "），请稍后重试",
        details: {},
      };
      result.error.details = result.error.details || {};
      if (result.retryAfterS === null && typeof result.error.details.retry_after_s === "number") {
        result.retryAfterS = Math.ceil(result.error.details.retry_after_s);
      }
    }
    return result;
  };

  // --- session ----------------------------------------------------------------------------------

  const TOKEN = "eg.session.token";
  const USER = "eg.session.username";

  EG.session = {
    token: function () { return sessionStorage.getItem(TOKEN); },
    username: function () { return sessionStorage.getItem(USER) || ""; },
    save: function (token, username) {
      sessionStorage.setItem(TOKEN, token);
      sessionStorage.setItem(USER, username);
    },
    clear: function () {
      sessionStorage.removeItem(TOKEN);
      sessionStorage.removeItem(USER);
    },
  };

  /** Go to the login page, coming back here afterwards. */
  EG.toLogin = function (message) {
    EG.session.clear();
    const next = location.pathname + location.search;
    location.assign("/login?next=" + encodeURIComponent(next) + (message ? "&expired=1" : ""));
  };

  /** The signed-in token, or off to the login page. */
  EG.requireSession = function () {
    const token = EG.session.token();
    if (!token) EG.toLogin();
    return token;
  };

  /** A same-site path to go on to (never another site): ``next`` if it is one, else ``fallback``. */
  EG.safeNext = function (next, fallback) {
    if (!next) return fallback;
    // Parsed as the browser will navigate it: it drops tabs and newlines and reads "\\" as "/", so
    // "/\t/evil.example" is "//evil.example", another site. Only this origin's paths are followed.
    let url;
    try { url = new URL(next, location.origin); } catch (err) { return fallback; }
    return url.origin === location.origin ? url.pathname + url.search + url.hash : fallback;
  };

  // Registrations the candidate made in this browser, per user: exam id → registration id.
  EG.registrations = {
    key: function () { return "eg.registrations." + EG.session.username().toLowerCase(); },
    all: function () {
      try { return JSON.parse(localStorage.getItem(this.key()) || "{}"); } catch (err) { return {}; }
    },
    get: function (examId) { return this.all()[String(examId)] || null; },
    put: function (examId, registrationId) {
      const all = this.all();
      all[String(examId)] = registrationId;
      localStorage.setItem(this.key(), JSON.stringify(all));
    },
  };

  // The waiting room's admission token of an exam (sent as X-Admission-Token when holding a seat).
  EG.admission = {
    key: function (examId) { return "eg.admission." + examId; },
    get: function (examId) {
      try {
        const saved = JSON.parse(sessionStorage.getItem(this.key(examId)) || "null");
        return saved && saved.expiresAt > Date.now() ? saved.token : null;
      } catch (err) { return null; }
    },
    put: function (examId, token, expiresInS) {
      sessionStorage.setItem(this.key(examId), JSON.stringify({ token: token, expiresAt: Date.now() + expiresInS * 1000 }));
    },
  };

  // --- formatting ---------------------------------------------------------------------------------

  /** "2026-03-01T09:00:00+08:00" → "2026-03-01 09:00" (":00" too with ``seconds``); times are already Beijing time. */
  EG.time = function (iso, seconds) {
    if (!iso) return "—";
    const match = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(:\d{2})?/.exec(iso);
    return match ? match[1] + " " + match[2] + (seconds && match[3] ? match[3] : "") : iso;
  };

  EG.clock = function (date) {
    const d = date || new Date();
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map(function (n) { return String(n).padStart(2, "0"); }).join(":");
  };

  /** Seconds as "3 分 05 秒" / "45 秒" / "约 2 小时 10 分". */
  EG.duration = function (seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " 秒";
    if (s < 3600) return Math.floor(s / 60) + " 分 " + String(s % 60).padStart(2, "0") + " 秒";
    return "约 " + Math.floor(s / 3600) + " 小时 " + Math.floor((s % 3600) / 60) + " 分";
  };

  EG.yuan = function (fen) { return "¥" + (fen / 100).toFixed(2); };

  EG.PROVINCES = {
    "11": "北京", "12": "天津", "13": "河北", "14": "山西", "15": "内蒙古", "21": "辽宁", "22": "吉林",
    "23": "黑龙江", "31": "上海", "32": "江苏", "33": "浙江", "34": "安徽", "35": "福建", "36": "江西",
    "37": "山东", "41": "河南", "42": "湖北", "43": "湖南", "44": "广东", "45": "广西", "46": "海南",
    "50": "重庆", "51": "四川", "52": "贵州", "53": "云南", "54": "西藏", "61": "陕西", "62": "甘肃",
    "63": "青海", "64": "宁夏", "65": "新疆", "71": "台湾", "81": "香港", "82": "澳门",
  };
  EG.province = function (code) { return EG.PROVINCES[code] || code; };

  // --- DOM ------------------------------------------------------------------------------------------

  EG.$ = function (selector, root) { return (root || document).querySelector(selector); };
  EG.$$ = function (selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); };

  /** An element with attributes and children (strings become text: nothing is parsed as HTML). */
  EG.el = function (tag, attrs, children) {
    const node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      const value = attrs[name];
      if (value === null || value === undefined || value === false) return;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else if (name.slice(0, 2) === "on") node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  };

  EG.dl = function (target, rows) {
    target.replaceChildren.apply(target, rows.map(function (row) {
      return EG.el("div", {}, [EG.el("dt", { text: row[0] }), EG.el("dd", { text: row[1] === null || row[1] === undefined ? "—" : String(row[1]) })]);
    }));
  };

  // --- problems and errors ----------------------------------------------------------------------------

  // details.fields problem codes (core/accounts.py, core/registrations.py, lookups) in Chinese.
  const PROBLEMS = {
    required: "此项必填",
    invalid_format: "格式不正确",
    invalid_check_digit: "证件号码校验位不正确，请核对",
    invalid_length: "长度不正确",
    invalid_region: "证件号码的地区码不正确",
    invalid_birth_date: "证件号码中的出生日期不正确",
    invalid_characters: "含有不允许的字符",
    too_short: "长度不足",
    too_long: "超出长度限制",
    too_few_character_classes: "密码须包含大写字母、小写字母、数字、符号中的至少三类",
    contains_username: "密码不能包含用户名",
    contains_id_number: "密码不能包含证件号码",
    invalid_choice: "请从列表中选择",
    unknown_field: "不支持的字段",
    must_be_string: "请填写文字",
    must_be_text: "请填写文字",
    must_be_integer: "请填写整数",
    must_be_list: "格式不正确",
    must_be_object: "格式不正确",
    must_be_true: "请勾选此项",
    must_be_exam_id: "请选择考试",
    must_be_cert_no: "证书编号为 6 至 32 位字母或数字",
    duplicate: "有重复的内容",
    too_many: "条目过多",
    too_early: "时间过早",
    in_future: "不能晚于当前时间",
    out_of_range: "超出允许的范围",
    other_province: "只能选择报考省份的考点",
    unknown_exam: "考试不存在",
    give_id_number_or_ticket_no_not_both: "证件号码和准考证号只需填写一项",
    mismatch: "两次输入不一致",
    same_as_current: "与当前绑定的号码相同",
  };
  const FIELD_PROBLEMS = {
    "username.invalid_format": "用户名须以字母开头，由 6–20 位字母、数字或下划线组成",
    "password.too_short": "密码至少 8 位",
    "password.too_long": "密码最多 32 位",
    "password.invalid_characters": "密码只能使用英文字母、数字和英文符号",
    "new_password.too_short": "密码至少 8 位",
    "name.too_short": "姓名至少 2 个字",
    "name.invalid_characters": "姓名只能使用汉字（或证件上的英文字母）和“·”",
    "phone.invalid_format": "请输入 11 位中国大陆手机号码",
    "email.invalid_format": "电子邮箱格式不正确",
    "id_number.invalid_format": "证件号码格式不正确",
    "educations.graduated_on.invalid_format": "请按“年-月”填写，例如 2012-06",
    "educations.graduated_on.too_early": "毕业年月不能早于 1951 年",
    "educations.cert_no.duplicate": "学历证书编号重复",
    "degrees.obtained_on.invalid_format": "请按“年-月”填写，例如 2012-06",
    "degrees.obtained_on.too_early": "获得学位年月不能早于 1951 年",
    "degrees.cert_no.duplicate": "学位证书编号重复",
    "graduated_on.invalid_format": "请按“年-月”填写，例如 2012-06",
    "obtained_on.invalid_format": "请按“年-月”填写，例如 2012-06",
    "confirmation.name.mismatch": "两次输入的姓名不一致",
    "confirmation.id_number.mismatch": "两次输入的证件号码不一致",
    "new_phone.invalid_format": "请输入 11 位中国大陆手机号码",
    "new_phone.same_as_current": "新号码与当前绑定的号码相同",
    "work_years.out_of_range": "工作年限须在 0 到 60 年之间",
    "city.invalid_characters": "城市名称含有不允许的字符",
    "subjects.required": "请至少选择一个科目",
    "commitment.required": "请勾选承诺",
    "ticket_no.give_id_number_or_ticket_no_not_both": "证件号码和准考证号只需填写一项",
  };

  /** The Chinese sentence for a field's problem code. */
  EG.problem = function (path, code) {
    const generic = path.replace(/\.\d+(?=\.|$)/g, "");
    return FIELD_PROBLEMS[generic + "." + code] || PROBLEMS[code] || "填写有误（" + code + "）";
  };

  /** Where a field's error is shown: its own element, or its parent's ("subjects.0" → "subjects"). */
  function errorTarget(form, path) {
    let current = path;
    while (current) {
      const target = form.querySelector('[data-error-for="' + CSS.escape(current) + '"]');
      if (target) return { element: target, path: current };
      const cut = current.lastIndexOf(".");
      current = cut > 0 ? current.slice(0, cut) : "";
    }
    return null;
  }

  function markInvalid(form, path, invalid) {
    const container = form.querySelector('[data-field="' + CSS.escape(path) + '"]');
    if (!container) return;
    EG.$$("input, select, textarea", container).forEach(function (input) {
      if (invalid) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    });
  }

  /** Remove every message of ``form`` (field errors and its alert). */
  EG.clearErrors = function (form) {
    EG.$$("[data-error-for]", form).forEach(function (node) {
      node.textContent = "";
      markInvalid(form, node.getAttribute("data-error-for"), false);
    });
    const alert = EG.$("[data-alert]", form) || EG.$("[data-alert]");
    if (alert) { alert.hidden = true; alert.replaceChildren(); }
  };

  /** Show one field's message next to it; false when the form has no place for it. */
  EG.fieldError = function (form, path, message) {
    const target = errorTarget(form, path);
    if (!target) return false;
    target.element.textContent = target.element.textContent ? target.element.textContent + "；" + message : message;
    markInvalid(form, target.path, true);
    return true;
  };

  /** The sentence telling when to try again, from Retry-After. */
  EG.retrySentence = function (seconds) {
    if (!seconds) return "";
    const at = new Date(Date.now() + seconds * 1000);
    return "请在 " + EG.duration(seconds) + "后（" + EG.clock(at) + " 之后）重试。";
  };

  /** Show an alert: a sentence, optional list items, and when to retry. */
  EG.alert = function (alert, message, items, retryAfterS) {
    if (!alert) return;
    const sentence = /[。！？.!?）)]$/.test(message) ? message : message + "。";
    const children = [EG.el("p", { text: sentence })];
    if (items && items.length) children.push(EG.el("ul", {}, items.map(function (item) { return EG.el("li", { text: item }); })));
    if (retryAfterS) children.push(EG.el("p", { className: "retry", text: EG.retrySentence(retryAfterS) }));
    alert.replaceChildren.apply(alert, children);
    alert.hidden = false;
  };

  /**
   * Show an API error on a form: 422 field problems and 409 taken fields next to their inputs,
   * everything else (and fields with no input) in the form's alert, with when to retry for 429/503.
   * ``labels`` names fields for the alert's list; ``fieldFor`` maps error codes to a field
   * (e.g. captcha_invalid → captcha). Focuses the first field in error, else the alert.
   */
  EG.showError = function (form, result, options) {
    const opts = options || {};
    const labels = opts.labels || {};
    const error = result.error || { code: "unknown", message: "请求失败，请稍后重试", details: {} };
    const details = error.details || {};
    const alert = EG.$("[data-alert]", form) || EG.$("[data-alert]");
    const stray = [];
    let placed = 0;
    if (result.status === 422 && details.fields) {
      Object.keys(details.fields).forEach(function (path) {
        const message = EG.problem(path, details.fields[path]);
        if (EG.fieldError(form, path, message)) placed += 1;
        else stray.push((labels[path] || path) + "：" + message);
      });
    } else if (details.field && EG.fieldError(form, details.field, error.message)) {
      placed += 1;
    } else if (opts.fieldFor && opts.fieldFor[error.code] && EG.fieldError(form, opts.fieldFor[error.code], error.message)) {
      placed += 1;
    }
    const retry = result.status === 429 || result.status === 503 ? result.retryAfterS : null;
    const message = (opts.messages && opts.messages[error.code]) || error.message;
    EG.alert(alert, placed && !stray.length && !retry ? message + "（见下方标注）" : message, stray, retry);
    const first = form.querySelector('[aria-invalid="true"]');
    if (first) first.focus();
    else if (alert) alert.focus();
    if (retry) EG.holdSubmit(form, retry);
  };

  /** Disable the form's submit button until the retry time has passed. */
  EG.holdSubmit = function (form, seconds) {
    const button = EG.$("[data-submit]", form);
    if (!button) return;
    button.disabled = true;
    button.dataset.held = "1";
    setTimeout(function () { delete button.dataset.held; button.disabled = false; }, seconds * 1000);
  };

  /**
   * Point ``anchor`` at a signed, expiring download link (its ``exp`` query in unix seconds); a click
   * after it lapsed — which would download the API's 403 — calls ``onExpired`` instead.
   */
  const EXPIRED = new WeakMap();  // anchor → what its click does once its link lapsed (the latest given)
  EG.expiringLink = function (anchor, url, filename, onExpired) {
    anchor.href = url;
    anchor.dataset.expiresAt = new URL(url, location.href).searchParams.get("exp") || "";
    anchor.setAttribute("download", filename);
    const watched = EXPIRED.has(anchor);
    EXPIRED.set(anchor, onExpired);
    if (watched) return;
    anchor.addEventListener("click", function (event) {
      const expiresAt = Number(anchor.dataset.expiresAt || 0);
      if (expiresAt && Date.now() / 1000 >= expiresAt) {
        event.preventDefault();
        EXPIRED.get(anchor)();
      }
    });
  };

  /** Read a form's named controls into an object (checkboxes as booleans, radios as their value). */
  EG.formValues = function (form) {
    const values = {};
    EG.$$("input[name], select[name], textarea[name]", form).forEach(function (input) {
      if (input.disabled) return;
      if (input.type === "checkbox") values[input.name] = input.checked;
      else if (input.type === "radio") { if (input.checked) values[input.name] = input.value; }
      else values[input.name] = input.value.trim();
    });
    return values;
  };

  /** Run ``work`` with the form's submit button busy; the page stays usable if it throws. */
  EG.busy = async function (form, work) {
    const button = EG.$("[data-submit]", form);
    const label = button ? button.textContent : "";
    if (button) { button.disabled = true; button.setAttribute("aria-busy", "true"); button.textContent = "请稍候…"; }
    try {
      return await work();
    } finally {
      if (button) {
        button.removeAttribute("aria-busy");
        button.textContent = label;
        if (!button.dataset.held) button.disabled = false;
      }
    }
  };

  /** The live settings the server wrote into the page (captcha mode per route). */
  EG.live = function () {
    try { return JSON.parse(document.body.getAttribute("data-live") || "{}"); } catch (err) { return {}; }
  };

  /** The exam list (GET /api/v1/exams), fetched once per page. */
  let examsPromise = null;
  EG.exams = function () {
    if (!examsPromise) examsPromise = EG.api("GET", "/api/v1/exams", { token: null });
    return examsPromise;
  };

  /** Fill the form's #exam_id <select> with the exams (the ``?exam=`` one chosen); false, with the
   *  reason in the form's alert, when the list cannot be had. */
  EG.fillExamSelect = async function (form) {
    const exams = await EG.exams();
    if (!exams.ok) {
      EG.alert(EG.$("[data-alert]", form), "考试列表加载失败：" + exams.error.message, null, exams.retryAfterS);
      return false;
    }
    const select = EG.$("#exam_id", form);
    const selected = new URLSearchParams(location.search).get("exam");
    select.replaceChildren.apply(select, exams.data.map(function (exam) {
      return EG.el("option", { value: String(exam.id), text: exam.name, selected: String(exam.id) === String(selected) });
    }));
    return true;
  };

  // --- header -----------------------------------------------------------------------------------------

  function renderHeader() {
    const signedIn = Boolean(EG.session.token());
    EG.$$("[data-when]").forEach(function (node) {
      node.hidden = node.getAttribute("data-when") !== (signedIn ? "signed-in" : "signed-out");
    });
    EG.$$("[data-username]").forEach(function (node) { node.textContent = EG.session.username(); });
    EG.$$("[data-sign-out]").forEach(function (button) {
      button.addEventListener("click", async function () {
        await EG.api("DELETE", "/api/v1/sessions/current");
        EG.session.clear();
        location.assign("/");
      });
    });
  }

  document.addEventListener("DOMContentLoaded", renderHeader);
})();
