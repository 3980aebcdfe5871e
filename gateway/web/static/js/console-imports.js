/* 运行控制台 · 数据导入: choose the kind, a CSV or NDJSON file and a batch id; check it (POST
 * /admin/api/v1/imports/{kind}?dry_run=true: every bad row listed with its line and reason, nothing applied),
 * then import it as that batch (the same batch id again applies nothing); the latest batches below.
 *
 * Sign-in: js/console-signin.js (the console's token; only a role that may post imports). Importing is
 * enabled only after the same kind and file passed a check; changing either asks for a new check. An import
 * can still be refused (the data changed since the check): its report is shown.
 */
(function () {
  "use strict";

  const EG = window.EG;
  const KINDS = {
    scores: "成绩", pass_marks: "合格标准", exams: "考试", sites: "考点", certificates: "资格证书",
    integrity_records: "诚信档案",
  };
  // The header row of each kind's CSV file (core/imports: the kind's columns, in order).
  const COLUMNS = {
    scores: "exam_code,ticket_no,id_number,subject_code,score",
    pass_marks: "exam_code,level,subject_code,pass_mark",
    exams: "code,name,family,windows,fee_per_subject_fen,levels,subjects,review_rules",
    sites: "exam_code,province,city,name,address,capacity,rooms,seats_per_room,kind",
    certificates: "cert_no,name,id_number,exam_code,level,approved_on,management_no",
    integrity_records: "id_number,name,exam_family,violation,recorded_on,until",
  };
  const BATCH_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
  const TYPES = { csv: "text/csv", ndjson: "application/x-ndjson", jsonl: "application/x-ndjson" };

  let checked = null;  // {kind, file} that passed the last check

  const signIn = EG.consoleSignIn({ page: "[data-imports]", route: "imports.post", what: "数据导入",
                                    onlyFor: "管理员", onEnter: enter });

  async function enter() {
    showColumns();
    await loadBatches();
  }

  // --- the file and its check -----------------------------------------------------------------------------

  function pad(n) { return String(n).padStart(2, "0"); }

  function suggestBatchId() {
    const d = new Date();
    return EG.$("#kind").value.replace(/_/g, "-") + "-" + d.getFullYear() + pad(d.getMonth() + 1) + pad(d.getDate()) +
      "-" + pad(d.getHours()) + pad(d.getMinutes()) + pad(d.getSeconds());
  }

  function showColumns() {
    EG.$("[data-columns]").textContent = COLUMNS[EG.$("#kind").value];
  }

  function contentType(file) {
    const dot = file.name.lastIndexOf(".");
    const ext = dot >= 0 ? file.name.slice(dot + 1).toLowerCase() : "";
    if (TYPES[ext]) return TYPES[ext];
    return ["text/csv", "application/x-ndjson"].indexOf(file.type) >= 0 ? file.type : null;
  }

  function invalidate() {
    checked = null;
    EG.$("[data-apply]").disabled = true;
    EG.$("[data-apply-hint]").hidden = false;
  }

  /** The kind, file, type and batch id of the form, or null with the fields' errors shown. */
  function chosen(form) {
    EG.clearErrors(form);
    const file = EG.$("#file").files[0];
    const batch = EG.$("#batch-id").value.trim();
    let ok = true;
    if (!file) {
      EG.fieldError(form, "file", "请选择要导入的文件");
      ok = false;
    } else if (!contentType(file)) {
      EG.fieldError(form, "file", "只能导入 CSV（.csv）或 NDJSON（.ndjson）文件");
      ok = false;
    }
    if (!BATCH_ID.test(batch)) {
      EG.fieldError(form, "batch_id", batch ? "批次号格式有误" : "请填写批次号");
      ok = false;
    }
    if (!ok) {
      const first = EG.$("[aria-invalid=true]", form);
      if (first) first.focus();
      return null;
    }
    return { kind: EG.$("#kind").value, file: file, type: contentType(file), batch: batch };
  }

  function post(what, dryRun) {
    return signIn.admin("POST", "/admin/api/v1/imports/" + what.kind + (dryRun ? "?dry_run=true" : ""), {
      body: what.file, contentType: what.type, headers: { "Idempotency-Key": what.batch },
    });
  }

  function report(summary, rows) {
    const section = EG.$("[data-report]");
    EG.$("[data-report-summary]").textContent = summary;
    const body = EG.$("[data-bad-rows]");
    body.replaceChildren.apply(body, (rows || []).map(function (row) {
      return EG.el("tr", { "data-line": String(row.line) }, [
        EG.el("td", { text: "第 " + row.line + " 行" }), EG.el("td", { text: row.reason }),
      ]);
    }));
    EG.$("[data-report-rows]").hidden = !(rows && rows.length);
    section.hidden = false;
  }

  /** A refused check or import: the bad rows, a reused batch id, or another error. */
  function refused(result, what) {
    if (result.status === 422 && result.error.code === "import_rejected") {
      const details = result.error.details;
      report(KINDS[what.kind] + "文件 " + what.file.name + " 有 " + details.total + " 行有误，未导入任何数据" +
             (details.more ? "（以下列出前 " + details.rows.length + " 行，另有 " + details.more + " 行未列出）" : "") +
             "。请修改后重新校验。", details.rows);
      EG.$("[data-report]").focus();
      return;
    }
    if (result.status === 409) {
      EG.fieldError(EG.$("[data-upload]"), "batch_id", result.error.message);
      EG.$("#batch-id").focus();
      return;
    }
    if (result.status === 413) {
      const max = result.error.details.max_bytes;
      EG.fieldError(EG.$("[data-upload]"), "file", "文件过大" + (max ? "：上限为 " + (max / 1048576).toFixed(0) + " MB" : ""));
      EG.$("#file").focus();
      return;
    }
    if (result.status === 422 && result.error.details.fields) {
      return EG.showError(EG.$("[data-upload]"), result, { labels: { "Idempotency-Key": "批次号" } });
    }
    signIn.problem(result, "导入失败");
  }

  async function check(form) {
    const what = chosen(form);
    if (!what) return;
    invalidate();
    signIn.alertBox().hidden = true;
    signIn.say("");
    const result = await EG.busy(form, function () { return post(what, true); });
    if (!result.ok) return refused(result, what);
    const done = result.data;
    if (done.already_applied) {
      report("批次 " + done.batch_id + " 此前已导入（共 " + done.rows + " 行），再次导入不会做任何更改；如是新数据，请换一个批次号。", []);
      return;
    }
    checked = { kind: what.kind, file: what.file };
    EG.$("[data-apply]").disabled = false;
    EG.$("[data-apply-hint]").hidden = true;
    report("校验通过：" + KINDS[what.kind] + "文件 " + what.file.name + " 共 " + done.rows + " 行，没有发现错误，可以导入。", []);
  }

  async function apply() {
    const form = EG.$("[data-upload]");
    const what = chosen(form);
    if (!what) return;
    if (!checked || checked.kind !== what.kind || checked.file !== what.file) return invalidate();
    const button = EG.$("[data-apply]");
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    const result = await post(what, false);
    button.removeAttribute("aria-busy");
    if (!result.ok) {
      invalidate();
      return refused(result, what);
    }
    const done = result.data;
    invalidate();
    EG.$("[data-report]").hidden = true;
    signIn.say(done.already_applied
      ? "批次 " + done.batch_id + " 此前已导入，本次未做任何更改。"
      : "批次 " + done.batch_id + " 已导入：共 " + done.rows + " 行，其中 " + done.applied + " 行有更改，用时 " +
        done.seconds + " 秒。");
    EG.$("#file").value = "";
    EG.$("#batch-id").value = suggestBatchId();
    await loadBatches();
  }

  // --- the latest batches ---------------------------------------------------------------------------------

  function batchRow(batch) {
    return EG.el("tr", { "data-batch": batch.batch_id }, [
      EG.el("td", { text: batch.batch_id }),
      EG.el("td", { text: KINDS[batch.kind] || batch.kind }),
      EG.el("td", { text: String(batch.rows) }),
      EG.el("td", { text: String(batch.applied) }),
      EG.el("td", { text: batch.created_by }),
      EG.el("td", { text: EG.time(batch.created_at, true) }),
      EG.el("td", { text: batch.seconds + " 秒" }),
      EG.el("td", {}, [EG.el("code", { text: batch.sha256.slice(0, 12), title: "SHA-256 " + batch.sha256 })]),
    ]);
  }

  async function loadBatches() {
    const kind = EG.$("#batches-kind").value;
    const listed = await signIn.admin("GET", "/admin/api/v1/imports?limit=50" + (kind ? "&kind=" + kind : ""));
    if (!listed.ok) return signIn.problem(listed, "加载导入批次失败");
    const body = EG.$("[data-batches]");
    const rows = listed.data.batches.map(batchRow);
    if (!rows.length) rows.push(EG.el("tr", {}, [EG.el("td", { colspan: "8", className: "muted", text: "还没有导入批次" })]));
    body.replaceChildren.apply(body, rows);
  }

  // --- start ------------------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", function () {
    EG.$("#kind").addEventListener("change", function () {
      showColumns();
      invalidate();
      EG.$("#batch-id").value = suggestBatchId();
    });
    EG.$("#file").addEventListener("change", invalidate);
    EG.$("#batch-id").value = suggestBatchId();
    EG.$("[data-upload]").addEventListener("submit", function (event) {
      event.preventDefault();
      check(event.currentTarget);
    });
    EG.$("[data-apply]").addEventListener("click", apply);
    EG.$("[data-batches-filter]").addEventListener("submit", function (event) {
      event.preventDefault();
      EG.busy(event.currentTarget, loadBatches);
    });
    showColumns();
  });
})();
