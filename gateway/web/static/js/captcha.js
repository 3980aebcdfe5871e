/* The captcha widget of a form: a proof-of-work solved in the background, or an image with 换一张.
 *
 * Which kinds the route accepts is live config, written into the page (EG.live().captcha):
 * "pow" solves in a Web Worker while the candidate types; "image" shows a pre-drawn image;
 * "either" starts with the proof-of-work and offers the image instead; "off" shows nothing.
 * A captcha is spent by its first use, right or wrong, so the form asks for a new one after
 * every submission the server looked at (EG.Captcha.renew).
 */
(function () {
  "use strict";

  const EG = window.EG;
  let worker = null;
  let jobs = 0;
  const waiting = {};

  function solver() {
    if (worker) return worker;
    worker = new Worker(document.body.getAttribute("data-pow-worker"));
    worker.onmessage = function (event) {
      const job = waiting[event.data.id];
      delete waiting[event.data.id];
      if (job) job.resolve(event.data.number);
    };
    worker.onerror = function () {
      Object.keys(waiting).forEach(function (id) { waiting[id].reject(new Error("worker failed")); delete waiting[id]; });
    };
    return worker;
  }

  function solveInWorker(challenge) {
    return new Promise(function (resolve, reject) {
      const id = ++jobs;
      waiting[id] = { resolve: resolve, reject: reject };
      solver().postMessage({ id: id, salt: challenge.salt, challenge: challenge.challenge, maxnumber: challenge.maxnumber });
    });
  }

  function expiresAtMs(salt) {
    const match = /[?&]expires=(\d+)/.exec(salt);
    return match ? parseInt(match[1], 10) * 1000 : Date.now() + 300000;
  }

  class Captcha {
    constructor(container) {
      this.container = container;
      this.route = container.getAttribute("data-captcha");
      this.mode = (EG.live().captcha || {})[this.route] || "either";
      this.kind = this.mode === "image" ? "image" : "pow";
      this.generation = 0;
      this.solution = null;
      this.imageId = null;
      this.renewTimer = null;
      this.build();
      if (this.mode === "off") {
        container.hidden = true;
        return;
      }
      this.start();
    }

    build() {
      const id = "captcha-" + this.route.replace(/[^a-z0-9]/gi, "-");
      this.label = EG.el("span", { className: "label", id: id + "-label", text: "安全验证" });
      this.powState = EG.el("p", { className: "captcha__state", "aria-live": "polite", "data-pow-state": true });
      this.image = EG.el("img", { className: "captcha__image", alt: "图片验证码", width: "150", height: "48" });
      this.refresh = EG.el("button", { type: "button", className: "secondary", text: "换一张", "data-captcha-refresh": true,
                                       onclick: () => this.loadImage() });
      this.answer = EG.el("input", { id: id + "-answer", className: "captcha__answer", inputmode: "numeric",
                                     autocomplete: "off", maxlength: "10", "aria-describedby": id + "-error" });
      this.imageBox = EG.el("div", { className: "captcha__image-box" }, [
        EG.el("div", { className: "captcha__row" }, [this.image, this.refresh]),
        EG.el("label", { for: id + "-answer", text: "请输入图中的 5 位数字" }),
        this.answer,
      ]);
      this.switcher = EG.el("button", { type: "button", className: "link-button", "data-captcha-switch": true,
                                        onclick: () => this.switchKind() });
      this.error = EG.el("p", { className: "field-error", id: id + "-error", "data-error-for": "captcha" });
      const group = EG.el("div", { role: "group", "aria-labelledby": id + "-label" }, [this.powState, this.imageBox]);
      if (this.mode === "either") group.appendChild(this.switcher);
      this.container.replaceChildren(this.label, group, this.error);
    }

    start() {
      this.powState.hidden = this.kind !== "pow";
      this.imageBox.hidden = this.kind !== "image";
      this.switcher.textContent = this.kind === "pow" ? "验证较慢？改用图片验证码" : "改用自动验证";
      if (this.kind === "pow") this.startPow();
      else this.loadImage();
    }

    switchKind() {
      this.kind = this.kind === "pow" ? "image" : "pow";
      this.error.textContent = "";
      this.start();
      (this.kind === "image" ? this.answer : this.switcher).focus();
    }

    startPow() {
      const generation = ++this.generation;
      clearTimeout(this.renewTimer);
      this.powState.textContent = "正在进行安全验证，请稍候…";
      this.powState.className = "captcha__state";
      this.solution = (async () => {
        const issued = await EG.api("GET", "/api/v1/captcha/pow", { token: null });
        if (!issued.ok) throw issued;
        const challenge = issued.data;
        const number = await solveInWorker(challenge);
        if (number === null) throw new Error("no solution");
        const payload = btoa(JSON.stringify({ algorithm: challenge.algorithm, challenge: challenge.challenge,
                                              number: number, salt: challenge.salt, signature: challenge.signature }));
        return { captcha: { kind: "pow", payload: payload }, expiresAt: expiresAtMs(challenge.salt) };
      })();
      this.solution.then((solved) => {
        if (generation !== this.generation) return;
        this.powState.textContent = "✓ 安全验证已完成";
        this.powState.className = "captcha__state captcha__state--done";
        // A challenge lapses after a few minutes: fetch a fresh one shortly before.
        this.renewTimer = setTimeout(() => this.startPow(), Math.max(5000, solved.expiresAt - Date.now() - 15000));
      }, (failure) => {
        if (generation !== this.generation) return;
        const retry = failure && failure.retryAfterS;
        this.powState.textContent = ((failure && failure.error && failure.error.message) || "安全验证失败") +
          (retry ? "，" + EG.retrySentence(retry) : "，请刷新页面重试。");
        if (retry) this.renewTimer = setTimeout(() => this.startPow(), retry * 1000);
      });
    }

    async loadImage() {
      const generation = ++this.generation;
      clearTimeout(this.renewTimer);
      this.imageId = null;
      this.image.removeAttribute("src");
      this.image.alt = "正在加载图片验证码…";
      this.answer.value = "";
      const issued = await EG.api("GET", "/api/v1/captcha/image", { token: null });
      if (generation !== this.generation) return;
      if (!issued.ok) {
        this.image.alt = "图片验证码暂不可用";
        this.error.textContent = issued.error.message + (issued.retryAfterS ? "，" + EG.retrySentence(issued.retryAfterS) : "");
        if (issued.retryAfterS) this.renewTimer = setTimeout(() => this.loadImage(), issued.retryAfterS * 1000);
        return;
      }
      this.error.textContent = "";
      this.imageId = issued.data.id;
      this.image.src = issued.data.image;
      this.image.alt = "图片验证码：请输入图中的 5 位数字";
    }

    /** The body's "captcha" value, or null after showing why there is none (the form stops there). */
    async value() {
      if (this.mode === "off") return undefined;
      if (this.kind === "image") {
        const answer = this.answer.value.trim();
        if (!this.imageId) {
          this.error.textContent = "图片验证码尚未加载，请点击“换一张”";
          return null;
        }
        if (!answer) {
          this.error.textContent = "请输入图片中的数字";
          this.answer.setAttribute("aria-invalid", "true");
          this.answer.focus();
          return null;
        }
        return { kind: "image", id: this.imageId, answer: answer };
      }
      try {
        return (await this.solution).captcha;
      } catch (failure) {
        this.error.textContent = this.powState.textContent;
        return null;
      }
    }

    /** Get a new captcha (the last one was spent). */
    renew() {
      if (this.mode !== "off") this.start();
    }
  }

  EG.Captcha = Captcha;

  /** The widget of ``form`` (its [data-captcha] container), made once. */
  EG.captchaOf = function (form) {
    const container = EG.$("[data-captcha]", form);
    if (!container) return null;
    if (!container._captcha) container._captcha = new Captcha(container);
    return container._captcha;
  };
})();
