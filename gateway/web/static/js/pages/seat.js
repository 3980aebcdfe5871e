/* 选择考点: the sites of the registration's province with live seats left; hold one, then pay.
 * Only an approved registration takes a seat: any other is sent to its status page, which says why. */
(function () {
  "use strict";

  const EG = window.EG;
  const REFRESH_S = 5;

  document.addEventListener("DOMContentLoaded", async function () {
    EG.requireSession();
    const registrationId = location.pathname.split("/")[2];
    const form = EG.$("[data-form]");
    const alert = EG.$("[data-alert]");
    const summary = EG.$("[data-summary]");
    const sitesBox = EG.$("[data-sites]");
    const holdBox = EG.$("[data-hold]");
    const countdown = EG.$("[data-countdown]");
    const confirmButton = EG.$("[data-confirm]");
    let registration = null;
    let sites = [];
    let hold = null; // {siteId, expiresAt (ms)}
    let ticking = null;

    const loaded = await EG.api("GET", "/api/v1/registrations/" + registrationId);
    if (loaded.status === 401) return EG.toLogin(true);
    if (!loaded.ok) {
      summary.textContent = "";
      EG.alert(alert, loaded.error.message, null, loaded.retryAfterS);
      return;
    }
    registration = loaded.data;
    if (registration.status === "paid") return location.replace("/registrations/" + registrationId + "/pay");
    if (registration.status === "cancelled" || registration.status === "expired") {
      summary.textContent = "";
      EG.alert(alert, "该报名已" + (registration.status === "cancelled" ? "取消" : "过期") + "，不能选择考点。", null, null);
      return;
    }
    if (registration.status !== "approved") return location.replace("/registrations/" + registrationId);
    const examId = registration.exam_id;
    const exams = await EG.exams();
    const exam = exams.ok ? exams.data.find(function (e) { return e.id === examId; }) : null;
    summary.textContent = (exam ? exam.name + " · " : "") + "报考省份：" + EG.province(registration.province) +
      " · 报名号 " + registrationId;
    form.hidden = false;

    function siteName(siteId) {
      const site = sites.find(function (s) { return s.site_id === siteId; });
      return site ? site.name : "考点 " + siteId;
    }

    function renderSites() {
      const chosen = (EG.$('input[name="site"]:checked', form) || {}).value;
      const focused = document.activeElement && document.activeElement.name === "site" ? document.activeElement.value : null;
      sitesBox.replaceChildren.apply(sitesBox, sites.map(function (site) {
        const held = hold && hold.siteId === site.site_id;
        const full = site.available <= 0 && !held;
        const id = "site-" + site.site_id;
        const input = EG.el("input", { type: "radio", name: "site", id: id, value: String(site.site_id), disabled: full,
                                       checked: chosen ? chosen === String(site.site_id) : held,
                                       "aria-describedby": id + "-meta" });
        return EG.el("label", { className: "site" + (full ? " site--full" : "") + (held ? " site--held" : ""), for: id }, [
          input,
          EG.el("span", {}, [
            EG.el("span", { className: "site__name", text: site.name + (held ? "（已为您保留）" : "") }),
            EG.el("span", { className: "site__meta", id: id + "-meta" }, [
              site.city + " · " + site.address + " · ",
              EG.el("span", { className: "site__left", text: full ? "已满" : "余座 " + site.available + " / " + site.capacity }),
            ]),
          ]),
        ]);
      }));
      if (focused) { const again = EG.$("#site-" + focused); if (again) again.focus(); }
    }

    async function loadSites() {
      const listed = await EG.api("GET", "/api/v1/exams/" + examId + "/sites?province=" + registration.province, { token: null });
      if (!listed.ok) {
        EG.$("[data-updated]").textContent = "（余座更新失败：" + listed.error.message + "）";
        return;
      }
      sites = listed.data;
      renderSites();
      EG.$("[data-updated]").textContent = "（更新于 " + EG.clock() + "）";
    }

    function showHold() {
      clearInterval(ticking);
      if (!hold) { holdBox.hidden = true; return; }
      holdBox.hidden = false;
      EG.$("[data-hold-text]").textContent = "已为您保留“" + siteName(hold.siteId) + "”的座位，请在保留期内缴费，逾期座位将自动释放。";
      const tick = function () {
        const left = Math.round((hold.expiresAt - Date.now()) / 1000);
        if (left <= 0) {
          clearInterval(ticking);
          countdown.textContent = "已过期";
          confirmButton.disabled = true;
          EG.alert(alert, "座位保留已过期，请重新选择考点。", null, null);
          hold = null;
          loadSites();
          return;
        }
        countdown.textContent = EG.duration(left);
      };
      confirmButton.disabled = false;
      tick();
      ticking = setInterval(tick, 1000);
    }

    if (registration.site_id && registration.hold_expires_at) {
      hold = { siteId: registration.site_id, expiresAt: Date.parse(registration.hold_expires_at) };
    }
    await loadSites();
    showHold();
    setInterval(loadSites, REFRESH_S * 1000);

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      EG.clearErrors(form);
      const chosen = EG.$('input[name="site"]:checked', form);
      if (!chosen) {
        EG.fieldError(form, "site_id", "请选择一个考点");
        EG.alert(alert, "请先选择考点。", null, null);
        (EG.$('input[name="site"]:not(:disabled)', form) || alert).focus();
        return;
      }
      await EG.busy(form, async function () {
        const headers = {};
        const admission = EG.admission.get(examId);
        if (admission) headers["X-Admission-Token"] = admission;
        const held = await EG.api("PUT", "/api/v1/registrations/" + registrationId + "/seat",
                                  { json: { site_id: Number(chosen.value) }, headers: headers });
        if (held.status === 401) return EG.toLogin(true);
        if (!held.ok) {
          EG.showError(form, held, { fieldFor: { site_full: "site_id", site_not_found: "site_id" } });
          if (held.error.code === "admission_required") {
            alert.appendChild(EG.el("p", {}, [EG.el("a", { href: "/exams/" + examId + "/queue?registration=" + registrationId,
                                                         text: "前往排队" })]));
          }
          if (held.error.code === "site_full") loadSites();
          if (held.error.code === "not_approved") location.replace("/registrations/" + registrationId);
          return;
        }
        hold = { siteId: held.data.site_id, expiresAt: held.data.hold_expires_at ? Date.parse(held.data.hold_expires_at) : Infinity };
        renderSites();
        showHold();
        holdBox.focus();
      });
    });

    // The registration was confirmed and approved before the seat: on to the payment.
    confirmButton.addEventListener("click", function () {
      location.assign("/registrations/" + registrationId + "/pay");
    });

    EG.$("[data-release]").addEventListener("click", async function () {
      const released = await EG.api("DELETE", "/api/v1/registrations/" + registrationId + "/seat");
      if (released.status === 401) return EG.toLogin(true);
      if (!released.ok) {
        EG.alert(alert, released.error.message, null, released.retryAfterS);
        alert.focus();
        return;
      }
      hold = null;
      showHold();
      await loadSites();
      EG.$('input[name="site"]:not(:disabled)', form) && EG.$('input[name="site"]:not(:disabled)', form).focus();
    });
  });
})();
