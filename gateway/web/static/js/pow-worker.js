/* The proof-of-work solver, run in a Web Worker so the page stays responsive while it searches.
 *
 * ALTCHA (SHA-256): find the number n in 0..maxnumber with sha256(salt + n) == challenge. A plain
 * JavaScript SHA-256 over a reused buffer is used rather than crypto.subtle: it needs no secure
 * context and, without an await per candidate, it is several times faster for such short inputs.
 */
"use strict";

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const IV = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
const W = new Int32Array(64);
const H = new Int32Array(8);

/** SHA-256 of the first ``blocks`` 64-byte blocks of ``msg`` (already padded) into H. */
function compress(msg, blocks) {
  for (let i = 0; i < 8; i++) H[i] = IV[i];
  for (let block = 0; block < blocks; block++) {
    const o = block * 64;
    for (let t = 0; t < 16; t++) {
      const p = o + t * 4;
      W[t] = (msg[p] << 24) | (msg[p + 1] << 16) | (msg[p + 2] << 8) | msg[p + 3];
    }
    for (let t = 16; t < 64; t++) {
      const w15 = W[t - 15], w2 = W[t - 2];
      const s0 = ((w15 >>> 7) | (w15 << 25)) ^ ((w15 >>> 18) | (w15 << 14)) ^ (w15 >>> 3);
      const s1 = ((w2 >>> 17) | (w2 << 15)) ^ ((w2 >>> 19) | (w2 << 13)) ^ (w2 >>> 10);
      W[t] = (W[t - 16] + s0 + W[t - 7] + s1) | 0;
    }
    let a = H[0], b = H[1], c = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7];
    for (let t = 0; t < 64; t++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[t] + W[t]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    H[0] = (H[0] + a) | 0; H[1] = (H[1] + b) | 0; H[2] = (H[2] + c) | 0; H[3] = (H[3] + d) | 0;
    H[4] = (H[4] + e) | 0; H[5] = (H[5] + f) | 0; H[6] = (H[6] + g) | 0; H[7] = (H[7] + h) | 0;
  }
}

/** The number whose hash with ``salt`` is ``challenge`` (64 hex digits), or null when none up to ``maxnumber``. */
function solve(salt, challenge, maxnumber) {
  const target = new Int32Array(8);
  for (let i = 0; i < 8; i++) target[i] = parseInt(challenge.slice(i * 8, i * 8 + 8), 16) | 0;
  const saltLength = salt.length;
  const msg = new Uint8Array(Math.ceil((saltLength + 11 + 9) / 64) * 64 + 64);
  for (let i = 0; i < saltLength; i++) msg[i] = salt.charCodeAt(i) & 0xff;
  for (let n = 0; n <= maxnumber; n++) {
    const digits = String(n);
    const length = saltLength + digits.length;
    const blocks = Math.ceil((length + 9) / 64);
    msg.fill(0, saltLength, blocks * 64);
    for (let i = 0; i < digits.length; i++) msg[saltLength + i] = digits.charCodeAt(i);
    msg[length] = 0x80;
    const bits = length * 8;
    const end = blocks * 64;
    msg[end - 4] = (bits >>> 24) & 0xff;
    msg[end - 3] = (bits >>> 16) & 0xff;
    msg[end - 2] = (bits >>> 8) & 0xff;
    msg[end - 1] = bits & 0xff;
    compress(msg, blocks);
    if (H[0] === target[0] && H[1] === target[1] && H[2] === target[2] && H[3] === target[3] &&
        H[4] === target[4] && H[5] === target[5] && H[6] === target[6] && H[7] === target[7]) {
      return n;
    }
  }
  return null;
}

if (typeof self !== "undefined" && typeof self.postMessage === "function" && typeof module === "undefined") {
  self.onmessage = function (event) {
    const job = event.data;
    const started = Date.now();
    const number = solve(String(job.salt), String(job.challenge).toLowerCase(), Number(job.maxnumber));
    self.postMessage({ id: job.id, number: number, tookMs: Date.now() - started });
  };
}
if (typeof module !== "undefined") module.exports = { solve: solve };
