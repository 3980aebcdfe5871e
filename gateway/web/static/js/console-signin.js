/* The console pages' sign-in: the admin token kept in sessionStorage ("eg.console.token", this tab only,
 * shared with /console), checked with GET /admin/api/v1/me, and the page shown only when the token's role
 * may use the page's route. A page calls EG.consoleSignIn once and gets the calls it makes with the token.
 *
 *   const signIn = EG.consoleSignIn({ page: "[data-score-reviews]", route: "admin.score_reviews.list",
 *                                      what: "成绩复核", onEnter: async function (me) { … } });
 *   signIn.admin("GET", path)  ·  signIn.problem(result, what, conflicts)  ·  signIn.say(text)  ·
 *   signIn.signOut(message)  ·  signIn.alertBox()
 *
 * Options besides those: scope, the whoami line's word for the token's provinces ("范围" unless given, e.g.
 * "审核范围"); onlyFor, who alone may use the page, said when a role may not ("管理员": "…权限（仅限管理员）。").
 * Used by every console page but /console itself (console.js: its own sign-in, the role's sections shown).
 *
 * Markup: [data-signin] with [data-signin-form] (#token), the page's root holding [data-whoami],
 * [data-alert] and [data-notice], and [data-console-signed-in] / [data-console-sign-out] in the header.
 */
(function () {
  "use strict";

  const EG = window.EG;
  const TOKEN = "eg.console.token";  // the console's key (console.js)

  EG.consoleSignIn = function (options) {
    let token = sessionStorage.getItem(TOKEN);
    const root = function () { return EG.$(options.page); };
    const alertBox = function () { return EG.$(options.page + " > [data-alert]"); };

    function admin(method, path, more) {
      return EG.api(method, path, Object.assign({ token: token }, more || {}));
    }

    function signOut(message) {
      token = null;
      sessionStorage.removeItem(TOKEN);
      root().hidden = true;
      EG.$("[data-console-signed-in]").hidden = true;
      EG.$("[data-signin]").hidden = false;
      const form = EG.$("[data-signin-form]");
      EG.clearErrors(form);
      if (message) EG.fieldError(form, "token", message);
      EG.$("#token").value = "";
      EG.$("#token").focus();
    }

    function problem(result, what, conflicts) {
      if (result.status === 401) { signOut("管理令牌无效或已撤销，请重新输入。"); return; }
      const conflict = (conflicts || []).indexOf(result.error.code) >= 0;
      EG.alert(alertBox(), (what ? what + "：" : "") + result.error.message + (conflict ? "，列表已刷新" : ""),
               null, result.retryAfterS);
      alertBox().focus();
    }

    async function enter() {
      const loaded = await admin("GET", "/admin/api/v1/me");
      if (loaded.status === 401) return signOut("管理令牌无效，请核对后重试。");
      if (!loaded.ok) {
        EG.$("[data-signin]").hidden = false;
        EG.fieldError(EG.$("[data-signin-form]"), "token", loaded.error.message +
                      (loaded.retryAfterS ? "，" + EG.retrySentence(loaded.retryAfterS) : ""));
        return;
      }
      const me = loaded.data;
      if (me.routes.indexOf(options.route) < 0) {
        return signOut("该令牌的角色（" + me.role_label + "）没有" + options.what + "权限" +
                       (options.onlyFor ? "（仅限" + options.onlyFor + "）" : "") + "。");
      }
      sessionStorage.setItem(TOKEN, token);
      EG.$("[data-signin]").hidden = true;
      root().hidden = false;
      EG.$("[data-console-signed-in]").hidden = false;
      const who = me.display_name ? me.display_name + "（" + me.name + "）" : me.name;
      EG.$("[data-whoami]", root()).textContent = "当前登录：" + who + " · " + me.role_label + " · " + (options.scope || "范围") + "：" +
        (me.provinces === null ? "全国" : me.provinces.map(EG.province).join("、"));
      await options.onEnter(me);
    }

    document.addEventListener("DOMContentLoaded", function () {
      EG.$("[data-signin-form]").addEventListener("submit", function (event) {
        event.preventDefault();
        const form = event.currentTarget;
        EG.clearErrors(form);
        const typed = EG.$("#token").value.trim();
        if (!typed) {
          EG.fieldError(form, "token", "请输入管理令牌");
          EG.$("#token").focus();
          return;
        }
        token = typed;
        enter();
      });
      EG.$("[data-console-sign-out]").addEventListener("click", function () { signOut(null); });
      if (token) enter(); else signOut(null);
    });

    return {
      admin: admin,
      problem: problem,
      signOut: signOut,
      alertBox: alertBox,
      say: function (text) { EG.$("[data-notice]", root()).textContent = text; },
    };
  };
})();
