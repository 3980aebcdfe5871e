/* 运行控制台 · 操作员与令牌 (admins): list operators and their tokens, add an operator, issue a token
 * (shown once), revoke a token, disable or enable an operator.
 *
 * Runs once console.js has signed in ("eg:console-ready"), through EG.console: its admin() call
 * carries the token, and may() says whether the role may call a route. A provincial admin sees and
 * manages only operators within its provinces (the server decides: 403 / 404 otherwise).
 */
(function () {
  "use strict";

  const EG = window.EG;
  const LIST = "/admin/api/v1/operators";
  const ROLES = { reviewer: "审核员", operator: "运维人员", admin: "管理员" };
  const LIFETIMES = [["", "默认（网关设置，通常 90 天）"], ["604800", "7 天"], ["2592000", "30 天"],
                     ["15552000", "180 天"], ["31536000", "365 天"]];
  const NAME = /^[a-z][a-z0-9._-]{1,31}$/;

  let operators = [];

  function section() { return EG.$("#operators"); }
  function alertBox() { return EG.$("[data-operators-alert]"); }
  function say(text) { EG.$("[data-notice]").textContent = text; }

  function path(name) { return LIST + "/" + encodeURIComponent(name); }

  /** A failed call: 401 signs out; anything else is shown in the section's alert. */
  function failed(result, what) {
    if (result.status === 401) { EG.console.signOut("管理令牌无效或已撤销，请重新输入。"); return; }
    EG.alert(alertBox(), what + "失败：" + result.error.message, null, result.retryAfterS);
    alertBox().focus();
  }

  function tokenItem(operator, token) {
    const state = token.active ? "有效期至 " + EG.time(token.expires_at) : "已过期（" + EG.time(token.expires_at) + "）";
    const used = token.last_used_at ? "，最近使用 " + EG.time(token.last_used_at) : "，尚未使用";
    return EG.el("li", {}, [
      EG.el("span", { text: "#" + token.id + (token.label ? " " + token.label : "") + " · " + state + used + " " }),
      EG.el("button", { type: "button", className: "secondary", text: "撤销令牌 #" + token.id,
                        "aria-label": "撤销 " + operator.name + " 的令牌 #" + token.id,
                        onclick: function (event) { revoke(operator, token, event.currentTarget); } }),
    ]);
  }

  function row(operator) {
    const stored = operator.source === "database";
    const who = operator.display_name ? operator.display_name + "（" + operator.name + "）" : operator.name;
    const tokens = stored
      ? (operator.tokens.length ? EG.el("ul", { className: "plain-list" }, operator.tokens.map(function (token) { return tokenItem(operator, token); }))
                                : EG.el("span", { className: "muted", text: "没有令牌" }))
      : EG.el("span", { className: "muted", text: "EXAMGATE_ADMIN_TOKENS 中配置" });
    const actions = stored
      ? EG.el("button", { type: "button", className: operator.disabled ? "secondary" : "danger",
                          text: (operator.disabled ? "启用 " : "停用 ") + operator.name,
                          onclick: function (event) { toggle(operator, event.currentTarget); } })
      : EG.el("span", { className: "muted", text: "只能在配置中修改" });
    return EG.el("tr", { "data-operator": operator.name }, [
      EG.el("td", { text: who }),
      EG.el("td", { text: ROLES[operator.role] || operator.role }),
      EG.el("td", { text: EG.console.scopeText(operator.provinces) }),
      EG.el("td", { text: operator.disabled ? "已停用" : "启用" }),
      EG.el("td", {}, [tokens]),
      EG.el("td", {}, [actions]),
    ]);
  }

  function render() {
    const body = EG.$("[data-operators]");
    const rows = operators.map(row);
    if (!rows.length) rows.push(EG.el("tr", {}, [EG.el("td", { colspan: "6", className: "muted", text: "还没有操作员" })]));
    body.replaceChildren.apply(body, rows);
    const chooser = EG.$("#token-operator");
    const stored = operators.filter(function (o) { return o.source === "database" && !o.disabled; });
    chooser.replaceChildren.apply(chooser, stored.map(function (o) {
      return EG.el("option", { value: o.name, text: o.name + "（" + (ROLES[o.role] || o.role) + "）" });
    }));
    EG.$("[data-token-issue]").hidden = !stored.length;
  }

  async function load() {
    const listed = await EG.console.admin("GET", LIST);
    if (!listed.ok) return failed(listed, "加载操作员列表");
    operators = listed.data.operators;
    render();
  }

  async function revoke(operator, token, button) {
    button.disabled = true;
    const done = await EG.console.admin("DELETE", path(operator.name) + "/tokens/" + token.id);
    button.disabled = false;
    if (!done.ok) return failed(done, "撤销令牌");
    say("已撤销 " + operator.name + " 的令牌 #" + token.id + "：各网关进程将在数秒内拒绝它。");
    load();
  }

  async function toggle(operator, button) {
    button.disabled = true;
    const done = await EG.console.admin("PATCH", path(operator.name), {
      json: { disabled: !operator.disabled }, contentType: "application/merge-patch+json" });
    button.disabled = false;
    if (!done.ok) return failed(done, operator.disabled ? "启用" : "停用");
    say(done.data.disabled ? "已停用 " + operator.name + "：其令牌将在数秒内失效。" : "已启用 " + operator.name + "。");
    load();
  }

  function showIssued(issued) {
    EG.$("[data-issued-text]").textContent = "已为 " + issued.operator + " 签发令牌 #" + issued.id + "，有效期至 " +
      EG.time(issued.expires_at) + "。令牌只显示这一次（服务器只保存其摘要），请立即复制并交给本人：";
    EG.$("[data-issued-token]").textContent = issued.token;
    EG.$("[data-issued]").hidden = false;
    EG.$("[data-issued-token]").focus();
  }

  function hideIssued() {
    EG.$("[data-issued-token]").textContent = "";
    EG.$("[data-issued]").hidden = true;
  }

  /** "11, 31" → ["11", "31"]; empty → null (national); undefined when a code is not a province. */
  function provincesOf(text) {
    const codes = text.split(/[\s,，、]+/).filter(Boolean);
    if (!codes.length) return null;
    return codes.every(function (code) { return EG.PROVINCES[code]; }) ? codes : undefined;
  }

  async function add(form) {
    EG.clearErrors(form);
    const values = EG.formValues(form);
    const provinces = provincesOf(values.provinces);
    if (!NAME.test(values.name)) {
      EG.fieldError(form, "name", "账号名须以小写字母开头，由 2–32 位小写字母、数字或 . _ - 组成");
      EG.$("#operator-name").focus();
      return;
    }
    if (provinces === undefined) {
      EG.fieldError(form, "provinces", "请填写两位省份代码，如 11（北京）、31（上海），用逗号分隔；留空为全国");
      EG.$("#operator-provinces").focus();
      return;
    }
    const made = await EG.console.admin("POST", LIST, { json: {
      name: values.name, role: values.role, provinces: provinces, display_name: values.display_name } });
    if (made.status === 401) return failed(made, "新增操作员");
    if (!made.ok) {
      EG.showError(form, made, { labels: { name: "账号名", role: "角色", provinces: "范围", display_name: "显示名" } });
      return;
    }
    form.reset();
    say("已新增操作员 " + made.data.name + "（" + ROLES[made.data.role] + "，范围：" + EG.console.scopeText(made.data.provinces) + "），请为其签发令牌。");
    await load();
    EG.$("#token-operator").value = made.data.name;
  }

  async function issue(form) {
    EG.clearErrors(form);
    const values = EG.formValues(form);
    const body = { label: values.label };
    if (values.lifetime) body.expires_in_s = Number(values.lifetime);
    const issued = await EG.console.admin("POST", path(values.operator) + "/tokens", { json: body });
    if (issued.status === 401) return failed(issued, "签发令牌");
    if (!issued.ok) {
      EG.showError(form, issued, { labels: { label: "用途", expires_in_s: "有效期" } });
      return;
    }
    form.reset();
    showIssued(issued.data);
    load();
  }

  function build() {
    const roles = EG.$("#operator-role");
    roles.replaceChildren.apply(roles, Object.keys(ROLES).map(function (role) {
      return EG.el("option", { value: role, text: ROLES[role] + "（" + role + "）", selected: role === "reviewer" });
    }));
    const lifetimes = EG.$("#token-lifetime");
    lifetimes.replaceChildren.apply(lifetimes, LIFETIMES.map(function (item) {
      return EG.el("option", { value: item[0], text: item[1] });
    }));
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!section()) return;
    build();
    EG.$("[data-operator-add]").addEventListener("submit", function (event) {
      event.preventDefault();
      const form = event.currentTarget;
      EG.busy(form, function () { return add(form); });
    });
    EG.$("[data-token-issue]").addEventListener("submit", function (event) {
      event.preventDefault();
      const form = event.currentTarget;
      EG.busy(form, function () { return issue(form); });
    });
    EG.$("[data-issued-hide]").addEventListener("click", hideIssued);
  });

  document.addEventListener("eg:console-ready", function () {
    if (section() && EG.console.may("admin.operators.list")) load();
  });

  document.addEventListener("eg:console-signed-out", function () {
    operators = [];
    if (!section()) return;
    hideIssued();
    EG.$("[data-operators]").replaceChildren();
  });
})();
