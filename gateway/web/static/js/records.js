/* Education (学历) and degree (学位) records: their names in Chinese, and their fields built for a form.
 *
 * The register page adds and removes degree records; the account page (注册维护) adds either kind. A
 * record's fields are named by their API path (degrees.0.cert_no), so a 422's details.fields lands
 * next to the input it names; an id prefix keeps two forms on one page apart.
 */
(function () {
  "use strict";

  const EG = window.EG;

  EG.RECORD_STATUS = { not_checked: "未核验", verified: "已核验", needs_manual: "需人工核验", rejected: "核验未通过" };
  EG.EDUCATION_LEVELS = { doctorate: "博士研究生", master: "硕士研究生", bachelor: "大学本科", college: "大学专科",
                          secondary: "中专" };
  EG.EDUCATION_MODES = { full_time: "全日制", part_time: "非全日制", self_study: "自学考试", online: "网络教育" };
  EG.DEGREE_LEVELS = { doctorate: "博士", master: "硕士", bachelor: "学士" };
  EG.DEGREE_KINDS = { academic: "学术学位", professional: "专业学位", honorary: "名誉学位" };

  const MONTH_HINT = "格式：年-月，例如 2012-06";
  EG.RECORD_FIELDS = {
    educations: [
      { name: "cert_no", label: "学历证书编号" },
      { name: "school", label: "毕业学校" },
      { name: "graduated_on", label: "毕业年月", month: true, hint: MONTH_HINT },
      { name: "major", label: "所学专业" },
      { name: "level", label: "学历层次", choices: EG.EDUCATION_LEVELS, chosen: "bachelor" },
      { name: "mode", label: "学习形式", choices: EG.EDUCATION_MODES, chosen: "full_time" },
    ],
    degrees: [
      { name: "cert_no", label: "学位证书编号" },
      { name: "school", label: "学位授予单位" },
      { name: "obtained_on", label: "获得学位年月", month: true, hint: MONTH_HINT },
      { name: "major", label: "学位专业" },
      { name: "level", label: "学位层次", choices: EG.DEGREE_LEVELS, chosen: "bachelor" },
      { name: "kind", label: "学位类型", choices: EG.DEGREE_KINDS, chosen: "academic" },
    ],
  };

  /**
   * The fields of one record: ``kind`` (educations | degrees), ``path`` its API path prefix ("degrees.0" or ""
   * for a record sent alone), ``idPrefix`` to keep ids unique, ``values`` to fill in, ``labelSuffix`` added to
   * every label (e.g. "（第 2 条）").
   */
  EG.recordFields = function (kind, path, idPrefix, values, labelSuffix) {
    const given = values || {};
    return EG.RECORD_FIELDS[kind].map(function (spec) {
      const fieldPath = path ? path + "." + spec.name : spec.name;
      const id = idPrefix + "-" + spec.name;
      const described = (spec.hint ? id + "-hint " : "") + id + "-error";
      let control;
      if (spec.choices) {
        control = EG.el("select", { id: id, name: fieldPath, required: true, "aria-describedby": described },
          Object.keys(spec.choices).map(function (value) {
            return EG.el("option", { value: value, text: spec.choices[value],
                                     selected: (given[spec.name] || spec.chosen) === value });
          }));
      } else {
        control = EG.el("input", { id: id, name: fieldPath, type: spec.month ? "month" : null,
                                   placeholder: spec.month ? "2012-06" : null, autocomplete: "off", required: true,
                                   "aria-describedby": described });
        control.value = given[spec.name] || "";
      }
      return EG.el("div", { className: "field", "data-field": fieldPath }, [
        EG.el("label", { for: id, text: spec.label + (labelSuffix || "") }),
        control,
        spec.hint ? EG.el("p", { className: "hint", id: id + "-hint", text: spec.hint }) : null,
        EG.el("p", { className: "field-error", id: id + "-error", "data-error-for": fieldPath }),
      ]);
    });
  };

  /** The values of a record's fields inside ``root`` (by their names ending in ``.<field>`` or equal to it). */
  EG.recordValues = function (kind, root, path) {
    const values = {};
    EG.RECORD_FIELDS[kind].forEach(function (spec) {
      const name = path ? path + "." + spec.name : spec.name;
      const input = root.querySelector('[name="' + CSS.escape(name) + '"]');
      const value = input ? input.value.trim() : "";
      if (value !== "") values[spec.name] = value;  // left out: the API names it "required" next to the input
    });
    return values;
  };

  /** A record's lines for display: [label, text] pairs. */
  EG.recordRows = function (kind, record) {
    if (kind === "educations") {
      return [["学历证书编号", record.cert_no], ["毕业学校", record.school], ["毕业年月", record.graduated_on],
              ["所学专业", record.major], ["学历层次", EG.EDUCATION_LEVELS[record.level] || record.level],
              ["学习形式", EG.EDUCATION_MODES[record.mode] || record.mode]];
    }
    return [["学位证书编号", record.cert_no], ["学位授予单位", record.school], ["获得学位年月", record.obtained_on],
            ["学位专业", record.major], ["学位层次", EG.DEGREE_LEVELS[record.level] || record.level],
            ["学位类型", EG.DEGREE_KINDS[record.kind] || record.kind]];
  };
})();
