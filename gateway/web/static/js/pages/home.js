/* 首页: the exams with their windows, and the candidate's registrations made in this browser. */
(function () {
  "use strict";

  const EG = window.EG;

  function within(now, from, until) {
    return Date.parse(from) <= now && now < Date.parse(until);
  }

  function examCard(exam, now) {
    const open = within(now, exam.registration_opens_at, exam.registration_closes_at);
    const enrol = "/exams/" + exam.id + "/enrol";
    const actions = [];
    if (open) {
      actions.push(EG.el("a", { className: "button", href: EG.session.token() ? enrol : "/login?next=" + encodeURIComponent(enrol),
                                text: "网上报名", "aria-label": "网上报名：" + exam.name }));
    }
    actions.push(EG.el("a", { href: "/tickets?exam=" + exam.id, text: "准考证打印", "aria-label": "准考证打印：" + exam.name }));
    actions.push(EG.el("a", { href: "/scores?exam=" + exam.id, text: "成绩查询", "aria-label": "成绩查询：" + exam.name }));
    const details = EG.el("dl", { className: "details" });
    EG.dl(details, [
      ["报名时间", EG.time(exam.registration_opens_at) + " 至 " + EG.time(exam.registration_closes_at) + (open ? "（报名中）" : "")],
      ["准考证打印", EG.time(exam.ticket_print_opens_at) + " 至 " + EG.time(exam.ticket_print_closes_at)],
      ["成绩发布", EG.time(exam.score_release_at)],
      ["报名费", EG.yuan(exam.fee_per_subject_fen) + " / 科"],
    ]);
    return EG.el("li", { className: "card" }, [
      EG.el("h3", { text: exam.name }),
      details,
      EG.el("div", { className: "actions" }, actions),
    ]);
  }

  document.addEventListener("DOMContentLoaded", async function () {
    const list = EG.$("[data-exams]");
    const loading = EG.$("[data-loading]");
    const result = await EG.exams();
    if (!result.ok) {
      loading.hidden = true;
      EG.alert(EG.$("[data-alert]"), "考试列表加载失败：" + result.error.message, null, result.retryAfterS);
      return;
    }
    const now = Date.now();
    const exams = result.data;
    loading.textContent = exams.length ? "共 " + exams.length + " 项考试" : "暂无考试";
    list.replaceChildren.apply(list, exams.map(function (exam) { return examCard(exam, now); }));

    if (EG.session.token()) {
      const mine = EG.registrations.all();
      const names = {};
      exams.forEach(function (exam) { names[exam.id] = exam.name; });
      const items = Object.keys(mine).filter(function (examId) { return names[examId]; }).map(function (examId) {
        return EG.el("li", { className: "card" }, [
          EG.el("h3", { text: names[examId] }),
          EG.el("p", { text: "报名号 " + mine[examId] }),
          EG.el("div", { className: "actions" }, [
            EG.el("a", { className: "button", href: "/registrations/" + mine[examId], text: "查看报名状态" }),
          ]),
        ]);
      });
      if (items.length) {
        EG.$("[data-mine-list]").replaceChildren.apply(EG.$("[data-mine-list]"), items);
        EG.$("[data-mine]").hidden = false;
      }
    }
  });
})();
