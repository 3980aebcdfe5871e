/* 运行控制台: live figures, the live config's controls and its audit trail, over the admin API.
 *
 * The admin token the operator types is kept in sessionStorage (this tab only) and sent as
 * Authorization: Bearer. Figures come from GET /admin/api/v1/stats (all processes, last 10 s)
 * and a few series of /metrics (same token); every change is a JSON merge patch sent with If-Match: <version>,
 * so a change made meanwhile by someone else is reported (412) instead of overwritten.
 * Signing in asks GET /admin/api/v1/me who the token is (name, role, scope) and which operator
 * routes its role may call: elements whose data-requires names a route it may not call are hidden.
 * Sections in scripts of their own listen for "eg:console-ready" and use EG.console.
 */
(function () {
  "use strict";

  const EG = window.EG;
  const TOKEN = "eg.console.token";
  const REFRESH_MS = 2000;
  const AUDIT_LIMIT = 20;
  const MODES = { enforce: "执行", shadow: "影子（只计数）", off: "关闭" };
  const ON_ERROR = { open: "放行", closed: "拒绝（503）", local: "进程内限流" };
  const KEYS = { ip: "客户端 IP", candidate: "考生", account: "账号", id_number: "证件号码", global: "全局" };
  const CAPTCHA_MODES = { either: "两者皆可", pow: "工作量证明", image: "图片", off: "关闭" };
  const SHEDDING = { candidate_read: "考生读请求", candidate_write: "考生写请求", login: "登录与找回密码",
                     payment_notify: "支付通知", admin: "运维接口" };

  let token = sessionStorage.getItem(TOKEN);
  let me = null;
  let config = null;
  let version = null;
  let exams = [];
  let paused = false;
  let timer = null;

  function admin(method, path, options) {
    return EG.api(method, path, Object.assign({ token: token }, options || {}));
  }

  const alertBox = function () { return EG.$("[data-console] [data-alert]"); };

  function notice(text) {
    EG.$("[data-notice]").textContent = text;
  }

  // --- sign in and out -----------------------------------------------------------------------------------

  function signOut(message) {
    token = null;
    me = null;
    config = null;
    sessionStorage.removeItem(TOKEN);
    EG.$("[data-whoami]").hidden = true;
    document.dispatchEvent(new CustomEvent("eg:console-signed-out"));
    clearTimeout(timer);
    EG.$("[data-console]").hidden = true;
    EG.$("[data-console-nav]").hidden = true;
    EG.$("[data-signin]").hidden = false;
    const form = EG.$("[data-signin-form]");
    EG.clearErrors(form);
    if (message) EG.fieldError(form, "token", message);
    EG.$("#token").value = "";
    EG.$("#token").focus();
  }

  async function enter() {
    if (!me && !(await loadMe())) return;
    if (may("admin.config.get") && !(await loadConfig())) return;
    EG.$("[data-signin]").hidden = true;
    EG.$("[data-console]").hidden = false;
    EG.$("[data-console-nav]").hidden = false;
    showWhoAmI();
    applyRole();
    if (config) {
      const listed = await EG.exams();
      exams = listed.ok ? listed.data : [];
      renderConfig();
    }
    if (may("admin.audit")) loadAudit();
    if (may("admin.stats")) refreshFigures();
    document.dispatchEvent(new CustomEvent("eg:console-ready", { detail: me }));
  }

  // --- who is signed in, and what the role may use --------------------------------------------------------

  function may(route) { return !!me && me.routes.indexOf(route) >= 0; }

  async function loadMe() {
    const loaded = await admin("GET", "/admin/api/v1/me");
    if (loaded.status === 401) { signOut("管理令牌无效，请核对后重试。"); return false; }
    if (!loaded.ok) {
      const form = EG.$("[data-signin-form]");
      EG.fieldError(form, "token", loaded.error.message + (loaded.retryAfterS ? "，" + EG.retrySentence(loaded.retryAfterS) : ""));
      return false;
    }
    me = loaded.data;
    return true;
  }

  function scopeText(provinces) {
    return provinces === null ? "全国" : provinces.map(EG.province).join("、");
  }

  function showWhoAmI() {
    const who = me.display_name ? me.display_name + "（" + me.name + "）" : me.name;
    const parts = [who, me.role_label, "范围：" + scopeText(me.provinces),
                   me.token ? "令牌有效期至 " + EG.time(me.token.expires_at) : "配置文件中的管理令牌"];
    const line = EG.$("[data-whoami]");
    line.textContent = "当前登录：" + parts.join(" · ");
    line.hidden = false;
  }

  /** Hide what the role may not use: each element whose data-requires names a route outside me.routes. */
  function applyRole() {
    EG.$$("[data-requires]").forEach(function (node) { node.hidden = !may(node.getAttribute("data-requires")); });
  }

  EG.console = { admin: admin, may: may, me: function () { return me; }, scopeText: scopeText, signOut: signOut };

  // --- figures -------------------------------------------------------------------------------------------

  function rate(value) { return value === null || value === undefined ? "—" : Number(value).toFixed(value >= 100 ? 0 : 1); }
  function cell(text) { return EG.el("td", { text: text === null || text === undefined ? "—" : String(text) }); }
  function row(cells) { return EG.el("tr", {}, cells.map(cell)); }
  function examName(id) {
    const exam = exams.find(function (e) { return String(e.id) === String(id); });
    return exam ? exam.name + "（" + id + "）" : "考试 " + id;
  }

  function fill(tbody, rows, empty, columns) {
    if (!rows.length) rows = [EG.el("tr", {}, [EG.el("td", { colspan: String(columns), className: "muted", text: empty })])];
    tbody.replaceChildren.apply(tbody, rows);
  }

  function section(stats, name) {
    const value = stats[name];
    return value && typeof value === "object" && !value.error ? value : {};
  }

  /** The samples of a few /metrics series: name → [{labels, value}]. */
  async function metricSamples() {
    try {
      const resp = await fetch("/metrics", { cache: "no-store", headers: { Authorization: "Bearer " + token } });
      if (!resp.ok) return null;
      const samples = {};
      (await resp.text()).split("\n").forEach(function (line) {
        const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
        if (!match) return;
        const labels = {};
        (match[2] || "").replace(/([a-zA-Z_]+)="([^"]*)"/g, function (_, key, value) { labels[key] = value; return ""; });
        (samples[match[1]] = samples[match[1]] || []).push({ labels: labels, value: Number(match[3]) });
      });
      return samples;
    } catch (err) {
      return null;
    }
  }

  function metric(samples, name, where) {
    return (samples[name] || []).filter(function (s) {
      return Object.keys(where || {}).every(function (key) { return s.labels[key] === where[key]; });
    }).map(function (s) { return s.value; });
  }
  function sum(values) { return values.length ? values.reduce(function (a, b) { return a + b; }, 0) : null; }
  function max(values) { return values.length ? Math.max.apply(null, values) : null; }

  function renderProcess(samples) {
    const target = EG.$("[data-process]");
    if (!samples) {
      EG.dl(target, [["/metrics", "不可用"]]);
      EG.$('[data-figure="in_flight"]').textContent = "—";
      EG.$('[data-figure="loop_lag"]').textContent = "—";
      return;
    }
    const inFlight = sum(metric(samples, "examgate_requests_in_flight"));
    const lag = max(metric(samples, "examgate_event_loop_lag_last_seconds"));
    const shed = sum(metric(samples, "examgate_shed_total"));
    const hashing = sum(metric(samples, "examgate_password_pool_jobs", { state: "in_flight" }));
    const capacity = sum(metric(samples, "examgate_password_pool_jobs", { state: "capacity" }));
    const rejected = sum(metric(samples, "examgate_password_pool_rejected"));
    const images = max(metric(samples, "examgate_captcha_pool_images"));
    const target_ = max(metric(samples, "examgate_captcha_pool_target"));
    const pgUsed = sum(metric(samples, "examgate_pg_pool_connections", { state: "in_use" }));
    const pgIdle = sum(metric(samples, "examgate_pg_pool_connections", { state: "idle" }));
    const redis = sum(metric(samples, "examgate_redis_commands_in_flight"));
    EG.$('[data-figure="in_flight"]').textContent = inFlight === null ? "—" : String(inFlight);
    EG.$('[data-figure="loop_lag"]').textContent = lag === null ? "—" : (lag * 1000).toFixed(1) + " ms";
    EG.dl(target, [
      ["过载拒绝（启动以来）", shed === null ? 0 : shed],
      ["密码哈希池（进行中 / 容量）", (hashing === null ? "—" : hashing) + " / " + (capacity === null ? "—" : capacity)],
      ["哈希池已拒绝", rejected === null ? "—" : rejected],
      ["图片验证码池（现有 / 目标）", (images === null ? "—" : images) + " / " + (target_ === null ? "—" : target_)],
      ["PostgreSQL 连接（使用中 / 共）", (pgUsed === null ? "—" : pgUsed) + " / " + (pgUsed === null ? "—" : pgUsed + (pgIdle || 0))],
      ["Redis 待回复命令", redis === null ? "—" : redis],
    ]);
  }

  /** The SMS outbox and the delivery workers' figures (examgate_sms_* of /metrics). */
  function renderSms(samples) {
    const target = EG.$("[data-sms]");
    if (!samples) {
      EG.dl(target, [["/metrics", "不可用"]]);
      return;
    }
    function figure(name, where) {
      const value = max(metric(samples, name, where));
      return value === null ? "—" : String(value);
    }
    function outcome(name) { return figure("examgate_sms_deliveries", { outcome: name }); }
    const oldest = max(metric(samples, "examgate_sms_oldest_waiting_seconds"));
    EG.dl(target, [
      ["待发送（排队 / 发送中）", figure("examgate_sms_queue_messages", { state: "queued" }) + " / " +
        figure("examgate_sms_queue_messages", { state: "sending" })],
      ["最早一条已等待", oldest === null ? "—" : oldest.toFixed(1) + " 秒"],
      ["发送速率（条 / 秒，近 10 秒）", rate(max(metric(samples, "examgate_sms_send_rate_per_second")))],
      ["已发送 / 发送失败", outcome("sent") + " / " + outcome("failed")],
      ["重试 / 被服务商限流", outcome("retried") + " / " + outcome("throttled")],
      ["结果不明后查询 / 查到已发送", outcome("looked_up") + " / " + outcome("found")],
    ]);
  }

  async function refreshFigures() {
    clearTimeout(timer);
    if (!token) return;
    const results = await Promise.all([admin("GET", "/admin/api/v1/stats"), metricSamples()]);
    const stats = results[0];
    if (stats.status === 401) return signOut("管理令牌无效或已撤销，请重新输入。");
    if (!stats.ok) {
      EG.$("[data-updated]").textContent = "更新失败：" + stats.error.message;
    } else {
      const data = stats.data;
      const totals = data.totals || {};
      ["requests_per_s", "rejections_per_s", "429_per_s", "503_per_s"].forEach(function (key) {
        EG.$('[data-figure="' + key + '"]').textContent = rate(totals[key]);
      });
      const routes = Object.keys(data.routes || {}).sort(function (a, b) {
        return data.routes[b].requests_per_s - data.routes[a].requests_per_s;
      });
      fill(EG.$("[data-routes]"), routes.map(function (name) {
        const r = data.routes[name];
        return row([name, rate(r.requests_per_s), rate(r.rejections_per_s), rate(r["429_per_s"]), rate(r["503_per_s"]), rate(r["5xx_per_s"])]);
      }), "近 10 秒没有请求", 6);
      const queues = section(data, "queues");
      fill(EG.$("[data-queue-figures]"), Object.keys(queues).map(function (id) {
        const q = queues[id];
        return row([examName(id), q.waiting, q.serving, q.tail, q.rate_per_s === null ? "—" : rate(q.rate_per_s), rate(q.admit_per_s)]);
      }), "没有开启排队的考试", 6);
      const seats = section(data, "seats");
      const seatRows = [];
      Object.keys(seats).forEach(function (id) {
        const sites = seats[id].sites || {};
        Object.keys(sites).forEach(function (siteId) {
          const s = sites[siteId];
          seatRows.push(row([examName(id), siteId, s.capacity, s.available, s.held]));
        });
      });
      fill(EG.$("[data-seat-figures]"), seatRows, "没有报名中的考试", 5);
      const streams = section(data, "hold_streams");
      fill(EG.$("[data-streams]"), Object.keys(streams).map(function (name) {
        const s = streams[name];
        return row([name, s.length, s.lag, s.pending]);
      }), "暂无座位事件", 4);
      EG.$("[data-config-version]").textContent = String(data.config_version);
      EG.$("[data-updated]").textContent = "更新于 " + EG.clock();
      if (version !== null && data.config_version > version) notice("配置已被更新到版本 " + data.config_version + "，保存前请先刷新页面或重新载入。");
    }
    renderProcess(results[1]);
    renderSms(results[1]);
    if (!paused) timer = setTimeout(refreshFigures, REFRESH_MS);
  }

  // --- config ---------------------------------------------------------------------------------------------

  async function loadConfig() {
    const loaded = await admin("GET", "/admin/api/v1/config");
    if (loaded.status === 401) { signOut("管理令牌无效，请核对后重试。"); return false; }
    if (!loaded.ok) {
      const form = EG.$("[data-signin-form]");
      EG.fieldError(form, "token", loaded.error.message + (loaded.retryAfterS ? "，" + EG.retrySentence(loaded.retryAfterS) : ""));
      return false;
    }
    config = loaded.data.config;
    version = loaded.data.version;
    EG.$("[data-config-version]").textContent = String(version);
    return true;
  }

  function numberValue(text) {
    const trimmed = String(text).trim();
    // Sent as typed when it is not a number: the server names the problem next to the input.
    return /^-?\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) : trimmed;
  }

  const PROBLEM_PATTERNS = [
    [/^must be an integer$/, function () { return "须为整数"; }],
    [/^must be a number$/, function () { return "须为数字"; }],
    [/^must be between (\S+) and (\S+)$/, function (m) { return "须在 " + m[1] + " 到 " + m[2] + " 之间"; }],
    [/^must be greater than 0 and at most (\S+)$/, function (m) { return "须大于 0 且不超过 " + m[1]; }],
    [/^must be one of (.+)$/, function (m) { return "须为以下之一：" + m[1]; }],
    [/^must be true or false$/, function () { return "须为是或否"; }],
    [/^is required$/, function () { return "必填"; }],
    [/^is not a known setting$/, function () { return "不是已知的设置项"; }],
    [/^must be a route name or pattern/, function () { return "须为接口名或通配模式，例如 scores.*"; }],
    [/^must be a message of 1-(\d+) characters$/, function (m) { return "提示信息须为 1–" + m[1] + " 个字符"; }],
  ];

  function problemText(problem) {
    for (let i = 0; i < PROBLEM_PATTERNS.length; i++) {
      const match = PROBLEM_PATTERNS[i][0].exec(problem);
      if (match) return PROBLEM_PATTERNS[i][1](match) + "（" + problem + "）";
    }
    return problem;
  }

  /** PATCH the config; field problems go next to the inputs whose data-error-for is their path. */
  async function applyPatch(patch, form, success) {
    EG.clearErrors(form);
    alertBox().hidden = true;
    notice("");
    const patched = await admin("PATCH", "/admin/api/v1/config", {
      json: patch, contentType: "application/merge-patch+json", headers: { "If-Match": '"' + version + '"' },
    });
    if (patched.ok) {
      config = patched.data.config;
      version = patched.data.version;
      EG.$("[data-config-version]").textContent = String(version);
      renderConfig();
      loadAudit();
      notice((success || "已保存") + "：配置版本 " + version + "，所有网关进程 1 秒内生效。");
      return true;
    }
    if (patched.status === 401) { signOut("管理令牌无效或已撤销，请重新输入。"); return false; }
    if (patched.status === 412) {
      await loadConfig();
      renderConfig();
      loadAudit();
      EG.alert(alertBox(), "配置已被其他操作员修改（当前版本 " + version + "），本次修改未保存。已载入最新配置，请核对后重新修改。", null, null);
      alertBox().focus();
      return false;
    }
    if (patched.status === 422 && patched.error.details.fields) {
      const fields = patched.error.details.fields;
      const stray = [];
      Object.keys(fields).forEach(function (path) {
        if (!EG.fieldError(form, path, problemText(fields[path]))) stray.push(path + "：" + problemText(fields[path]));
      });
      EG.alert(alertBox(), "配置无效，未作任何更改。" + (stray.length ? "" : "问题已标注在对应输入框旁。"), stray, null);
      const first = form.querySelector('[aria-invalid="true"]');
      (first || alertBox()).focus();
      return false;
    }
    EG.alert(alertBox(), "保存失败：" + patched.error.message, null, patched.retryAfterS);
    alertBox().focus();
    return false;
  }

  function field(path, id, label, control) {
    control.id = id;
    control.setAttribute("aria-describedby", id + "-error");
    return EG.el("div", { className: "field", "data-field": path }, [
      EG.el("label", { for: id, text: label }),
      control,
      EG.el("p", { className: "field-error", id: id + "-error", "data-error-for": path }),
    ]);
  }

  function numberInput(value, step) {
    return EG.el("input", { type: "number", inputmode: "decimal", step: step || "1", value: value === undefined ? "" : String(value), required: true });
  }

  function select(choices, value) {
    return EG.el("select", {}, Object.keys(choices).map(function (key) {
      return EG.el("option", { value: key, text: choices[key] + "（" + key + "）", selected: key === value });
    }));
  }

  function saveButton(text) { return EG.el("button", { type: "submit", className: "primary", "data-submit": true, text: text }); }

  function renderRules() {
    const rules = (config.ratelimit && config.ratelimit.rules) || [];
    const box = EG.$("[data-rules]");
    box.replaceChildren.apply(box, rules.map(function (rule, index) {
      const base = "ratelimit.rules[" + index + "]";
      const id = "rule-" + index;
      const inputs = {
        rate: numberInput(rule.rate), period_s: numberInput(rule.period_s, "any"), burst: numberInput(rule.burst),
        mode: select(MODES, rule.mode || "enforce"), on_redis_error: select(ON_ERROR, rule.on_redis_error || "open"),
      };
      const form = EG.el("form", { className: "rule", "aria-labelledby": id + "-title", "data-rule": rule.id, novalidate: true }, [
        EG.el("h3", { id: id + "-title" }, [EG.el("code", { text: rule.id })]),
        EG.el("p", { className: "rule__meta", text: "接口：" + [].concat(rule.routes).join("，") + " · 按" + (KEYS[rule.key] || rule.key) + "计" +
                                                        (rule.counts === "failures" ? " · 只计失败" : "") + (rule.cost && rule.cost !== 1 ? " · 每次消耗 " + rule.cost : "") }),
        EG.el("p", { className: "field-error", "data-error-for": base }),
        EG.el("div", { className: "grid-fields" }, [
          field(base + ".rate", id + "-rate", "速率（次/周期）", inputs.rate),
          field(base + ".period_s", id + "-period", "周期（秒）", inputs.period_s),
          field(base + ".burst", id + "-burst", "突发", inputs.burst),
          field(base + ".mode", id + "-mode", "模式", inputs.mode),
          field(base + ".on_redis_error", id + "-on-error", "Redis 故障时", inputs.on_redis_error),
        ]),
        EG.el("div", { className: "actions" }, [saveButton("保存规则 " + rule.id)]),
      ]);
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        const changed = rules.map(function (r, i) {
          if (i !== index) return r;
          return Object.assign({}, r, {
            rate: numberValue(inputs.rate.value), period_s: numberValue(inputs.period_s.value), burst: numberValue(inputs.burst.value),
            mode: inputs.mode.value, on_redis_error: inputs.on_redis_error.value,
          });
        });
        EG.busy(form, function () { return applyPatch({ ratelimit: { rules: changed } }, form, "限流规则 " + rule.id + " 已保存"); });
      });
      return form;
    }));
  }

  function renderQueues() {
    const rooms = (config.queue && config.queue.exams) || {};
    const box = EG.$("[data-queue-config]");
    const forms = Object.keys(rooms).map(function (examId) {
      const room = rooms[examId];
      const base = "queue.exams." + examId;
      const id = "queue-" + examId;
      const enabled = EG.el("input", { type: "checkbox", id: id + "-enabled", checked: room.enabled !== false, "aria-describedby": id + "-enabled-error" });
      const inputs = { admit_per_s: numberInput(room.admit_per_s === undefined ? 50 : room.admit_per_s, "any"),
                       place_ttl_s: numberInput(room.place_ttl_s === undefined ? 120 : room.place_ttl_s),
                       admission_ttl_s: numberInput(room.admission_ttl_s === undefined ? 600 : room.admission_ttl_s) };
      const form = EG.el("form", { className: "rule", "aria-labelledby": id + "-title", "data-queue": examId, novalidate: true }, [
        EG.el("h3", { id: id + "-title", text: "排队：" + examName(examId) }),
        EG.el("div", { className: "field", "data-field": base + ".enabled" }, [
          EG.el("label", { className: "choice", for: id + "-enabled" }, [enabled, "开启排队（选座前须排队入场）"]),
          EG.el("p", { className: "field-error", id: id + "-enabled-error", "data-error-for": base + ".enabled" }),
        ]),
        EG.el("div", { className: "grid-fields" }, [
          field(base + ".admit_per_s", id + "-admit", "放行速率（人/秒）", inputs.admit_per_s),
          field(base + ".place_ttl_s", id + "-place-ttl", "位置保留（秒）", inputs.place_ttl_s),
          field(base + ".admission_ttl_s", id + "-admission-ttl", "入场资格有效期（秒）", inputs.admission_ttl_s),
        ]),
        EG.el("div", { className: "actions" }, [
          saveButton("保存排队设置"),
          EG.el("button", { type: "button", className: "danger", text: "删除该考试的排队设置", onclick: function () {
            applyPatch({ queue: { exams: (function () { const p = {}; p[examId] = null; return p; })() } }, form, "排队设置已删除");
          } }),
        ]),
      ]);
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        const patch = { queue: { exams: {} } };
        patch.queue.exams[examId] = { enabled: enabled.checked, admit_per_s: numberValue(inputs.admit_per_s.value),
                                      place_ttl_s: numberValue(inputs.place_ttl_s.value),
                                      admission_ttl_s: numberValue(inputs.admission_ttl_s.value) };
        EG.busy(form, function () { return applyPatch(patch, form, "排队设置已保存"); });
      });
      return form;
    });
    if (!forms.length) forms.push(EG.el("p", { className: "muted", text: "还没有考试开启排队。" }));
    box.replaceChildren.apply(box, forms);
    const chooser = EG.$("#queue-add-exam");
    const free = exams.filter(function (exam) { return !rooms[String(exam.id)]; });
    chooser.replaceChildren.apply(chooser, free.map(function (exam) {
      return EG.el("option", { value: String(exam.id), text: exam.name + "（" + exam.id + "）" });
    }));
    EG.$("[data-queue-add]").hidden = !free.length;
  }

  function renderCaptcha() {
    const form = EG.$("[data-captcha-form]");
    const routes = (config.captcha && config.captcha.routes) || {};
    const selects = {};
    const rows = Object.keys(routes).map(function (route, index) {
      selects[route] = select(CAPTCHA_MODES, routes[route]);
      return field('captcha.routes["' + route + '"]', "captcha-route-" + index, route, selects[route]);
    });
    const newRoute = EG.el("input", { placeholder: "例如 scores.lookup", autocomplete: "off" });
    const newMode = select(CAPTCHA_MODES, "either");
    const maxnumber = numberInput(config.captcha && config.captcha.pow_maxnumber);
    form.replaceChildren(
      EG.el("div", { className: "grid-fields" }, rows),
      EG.el("div", { className: "grid-fields" }, [
        field("captcha-new-route", "captcha-new-route", "新增接口（可留空）", newRoute),
        field("captcha-new-mode", "captcha-new-mode", "新增接口的方式", newMode),
      ]),
      field("captcha.pow_maxnumber", "captcha-maxnumber", "工作量证明难度（maxnumber，越大越慢）", maxnumber),
      EG.el("div", { className: "actions" }, [saveButton("保存验证码设置")])
    );
    form.onsubmit = function (event) {
      event.preventDefault();
      const patch = { captcha: { routes: {}, pow_maxnumber: numberValue(maxnumber.value) } };
      Object.keys(selects).forEach(function (route) { patch.captcha.routes[route] = selects[route].value; });
      if (newRoute.value.trim()) patch.captcha.routes[newRoute.value.trim()] = newMode.value;
      EG.busy(form, function () { return applyPatch(patch, form, "验证码设置已保存"); });
    };
  }

  function renderMaintenance() {
    const entries = config.maintenance || {};
    const list = EG.$("[data-maintenance-list]");
    const items = Object.keys(entries).map(function (route) {
      return EG.el("li", {}, [
        EG.el("code", { text: route }),
        EG.el("span", { text: entries[route] }),
        EG.el("button", { type: "button", className: "secondary", text: "解除 " + route, onclick: function () {
          const patch = { maintenance: {} };
          patch.maintenance[route] = null;
          applyPatch(patch, EG.$("[data-maintenance-add]"), "已解除 " + route + " 的维护");
        } }),
      ]);
    });
    if (!items.length) items.push(EG.el("li", { className: "muted", text: "当前没有维护中的接口。" }));
    list.replaceChildren.apply(list, items);
  }

  function renderOthers() {
    const form = EG.$("[data-others-form]");
    const holdTtl = numberInput(config.seats && config.seats.hold_ttl_s);
    const shedding = config.shedding || {};
    const limits = {};
    const fields = Object.keys(SHEDDING).map(function (name) {
      limits[name] = numberInput(shedding[name]);
      return field("shedding." + name, "shedding-" + name, SHEDDING[name] + "：每进程最大并发", limits[name]);
    });
    const lag = numberInput(shedding.max_loop_lag_ms);
    form.replaceChildren(
      field("seats.hold_ttl_s", "hold-ttl", "座位保留时长（秒）", holdTtl),
      EG.el("div", { className: "grid-fields" }, fields.concat([field("shedding.max_loop_lag_ms", "shedding-lag", "事件循环延迟上限（毫秒，0 为不限）", lag)])),
      EG.el("div", { className: "actions" }, [saveButton("保存")])
    );
    form.onsubmit = function (event) {
      event.preventDefault();
      const patch = { seats: { hold_ttl_s: numberValue(holdTtl.value) }, shedding: { max_loop_lag_ms: numberValue(lag.value) } };
      Object.keys(limits).forEach(function (name) { patch.shedding[name] = numberValue(limits[name].value); });
      EG.busy(form, function () { return applyPatch(patch, form, "座位保留与过载保护设置已保存"); });
    };
  }

  function renderConfig() {
    renderRules();
    renderQueues();
    renderCaptcha();
    renderMaintenance();
    renderOthers();
  }

  // --- audit ---------------------------------------------------------------------------------------------

  function show(value) { return value === null || value === undefined ? "（无）" : JSON.stringify(value); }

  async function loadAudit() {
    const listed = await admin("GET", "/admin/api/v1/audit?limit=" + AUDIT_LIMIT);
    const body = EG.$("[data-audit]");
    if (!listed.ok) {
      fill(body, [], "变更记录加载失败：" + listed.error.message, 4);
      return;
    }
    fill(body, listed.data.changes.map(function (change) {
      const diff = EG.el("ul", { className: "diff" }, (change.diff || []).map(function (item) {
        return EG.el("li", { text: item.path + "：" + show(item.old) + " → " + show(item.new) });
      }));
      return EG.el("tr", {}, [cell(change.version), cell(EG.time(change.changed_at, true)), cell(change.actor), EG.el("td", {}, [diff])]);
    }), "暂无变更", 4);
  }

  // --- wiring --------------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", function () {
    const signin = EG.$("[data-signin-form]");
    signin.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(signin);
      const typed = EG.$("#token").value.trim();
      if (!typed) {
        EG.fieldError(signin, "token", "请输入管理令牌");
        EG.$("#token").focus();
        return;
      }
      token = typed;
      me = null;
      const ok = await loadMe();
      if (!ok) return;
      sessionStorage.setItem(TOKEN, token);
      enter();
    });

    EG.$("[data-pause]").addEventListener("click", function (event) {
      paused = !paused;
      event.currentTarget.setAttribute("aria-pressed", String(paused));
      event.currentTarget.textContent = paused ? "继续刷新" : "暂停刷新";
      if (!paused) refreshFigures();
      else clearTimeout(timer);
    });

    EG.$("[data-console-sign-out]").addEventListener("click", function () { signOut("已退出。"); });

    EG.$("[data-queue-add]").addEventListener("submit", function (event) {
      event.preventDefault();
      const form = event.currentTarget;
      const examId = EG.$("#queue-add-exam").value;
      if (!examId) return;
      const patch = { queue: { exams: {} } };
      patch.queue.exams[examId] = { enabled: true, admit_per_s: 50 };
      applyPatch(patch, form, "已为 " + examName(examId) + " 开启排队");
    });

    EG.$("[data-maintenance-add]").addEventListener("submit", function (event) {
      event.preventDefault();
      const form = event.currentTarget;
      EG.clearErrors(form);
      const route = EG.$("#maintenance-route").value.trim();
      const message = EG.$("#maintenance-message").value.trim();
      if (!route) { EG.fieldError(form, "maintenance-route", "请填写接口名"); EG.$("#maintenance-route").focus(); return; }
      if (!message) { EG.fieldError(form, "maintenance-message", "请填写提示信息"); EG.$("#maintenance-message").focus(); return; }
      const patch = { maintenance: {} };
      patch.maintenance[route] = message;
      applyPatch(patch, form, route + " 已进入维护").then(function (ok) {
        if (ok) { EG.$("#maintenance-route").value = ""; EG.$("#maintenance-message").value = ""; }
        else {
          // The server names the entry (maintenance["route"]); put it next to the input it came from.
          EG.$$("[data-alert] li", EG.$("[data-console]")).forEach(function (item) {
            const text = item.textContent;
            EG.fieldError(form, /接口名/.test(text) ? "maintenance-route" : "maintenance-message", text.replace(/^[^：]*：/, ""));
          });
        }
      });
    });

    if (token) enter();
  });
})();
