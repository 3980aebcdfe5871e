/* 排队等候: take a place in the exam's waiting room, follow it, and go on to seat selection once admitted. */
(function () {
  "use strict";

  const EG = window.EG;
  const POLL_MIN_S = 1;
  const POLL_MAX_S = 30;

  document.addEventListener("DOMContentLoaded", async function () {
    EG.requireSession();
    const examId = parseInt(location.pathname.split("/")[2], 10);
    const params = new URLSearchParams(location.search);
    const registrationId = params.get("registration") || EG.registrations.get(examId);
    const alert = EG.$("[data-alert]");
    const status = EG.$("[data-status]");
    const progress = EG.$("[data-progress]");
    const rejoin = EG.$("[data-rejoin]");
    const seatPage = registrationId ? "/registrations/" + registrationId + "/seat" : "/";
    let ticket = null;
    let firstAhead = null;
    let timer = null;
    let lastSpoken = "";

    EG.exams().then(function (result) {
      const exam = result.ok && result.data.find(function (e) { return e.id === examId; });
      if (exam) EG.$("[data-exam-summary]").textContent = exam.name;
    });

    function say(text) {
      // Announced through the polite live region only when the sentence changes.
      if (text !== lastSpoken) { status.textContent = text; lastSpoken = text; }
    }

    function show(place) {
      alert.hidden = true;
      EG.$("[data-position]").textContent = place.position ? String(place.position) : "待抽签";
      EG.$("[data-serving]").textContent = String(place.serving);
      EG.$("[data-ahead]").textContent = place.position ? place.ahead + " 人" : "—";
      EG.$("[data-eta]").textContent = EG.duration(place.eta_s);
      if (!place.position) {
        say("报名尚未开放。开放时（约 " + EG.duration(place.eta_s) + "后）将对已排队的考生随机排序，请保持本页面打开。");
        return;
      }
      if (firstAhead === null || place.ahead > firstAhead) firstAhead = place.ahead;
      progress.value = firstAhead ? Math.round(100 * (1 - place.ahead / firstAhead)) : 100;
      say("您前面还有 " + place.ahead + " 人，预计等待 " + EG.duration(place.eta_s) + "。");
    }

    function admitted(answer) {
      EG.admission.put(examId, answer.admission_token, answer.expires_in);
      progress.value = 100;
      EG.$("[data-ahead]").textContent = "0 人";
      EG.$("[data-eta]").textContent = "0 秒";
      say("轮到您了！正在进入考点选择…");
      setTimeout(function () { location.assign(seatPage); }, 600);
    }

    function schedule(seconds) {
      clearTimeout(timer);
      timer = setTimeout(poll, Math.min(POLL_MAX_S, Math.max(POLL_MIN_S, seconds || 2)) * 1000);
    }

    function trouble(result, then) {
      if (result.status === 401) return EG.toLogin(true);
      if (result.error.code === "queue_place_expired") {
        ticket = null;
        EG.alert(alert, result.error.message, null, null);
        say("排队位置已失效。");
        rejoin.hidden = false;
        rejoin.focus();
        return;
      }
      EG.alert(alert, result.error.message, null, result.retryAfterS);
      if (result.status === 429 || result.status === 503 || result.status === 0) {
        say("暂时无法刷新排队状态，稍后自动重试。");
        clearTimeout(timer);
        timer = setTimeout(then, (result.retryAfterS || 3) * 1000);
      } else {
        alert.focus();
      }
    }

    async function join() {
      rejoin.hidden = true;
      say("正在加入排队…");
      const joined = await EG.api("POST", "/api/v1/exams/" + examId + "/queue");
      if (joined.status === 404 && joined.error.code === "queue_not_enabled") {
        say("当前无需排队，正在进入考点选择…");
        location.replace(seatPage);
        return;
      }
      if (!joined.ok) return trouble(joined, join);
      ticket = joined.data.ticket;
      sessionStorage.setItem("eg.queue." + examId, ticket);
      if (joined.data.admitted) return poll();
      show(joined.data);
      schedule(joined.data.poll_after_s);
    }

    async function poll() {
      if (!ticket) return join();
      const polled = await EG.api("GET", "/api/v1/exams/" + examId + "/queue/" + encodeURIComponent(ticket));
      if (!polled.ok) {
        if (polled.status === 404 && polled.error.code === "queue_ticket_not_found") return join();
        if (polled.status === 404 && polled.error.code === "queue_not_enabled") return location.replace(seatPage);
        return trouble(polled, poll);
      }
      if (polled.data.admitted) return admitted(polled.data);
      show(polled.data);
      schedule(polled.data.poll_after_s);
    }

    rejoin.addEventListener("click", join);
    ticket = sessionStorage.getItem("eg.queue." + examId);
    poll();
  });
})();
