/*
 * satvault proof-of-liabilities verifier: checks a customer's proof against a published
 * root.json, entirely in the browser (or under Node: `require("./verify.js")`). Nothing is
 * sent anywhere. The format is in docs/custody.md; this file mirrors
 * satvault/custody/liabilities.py check for check.
 *
 *   leaf = SHA256("satvault-pol-leaf-v2" || u16be(len(account)) || account
 *                                        || nonce[32] || u64be(balance_msat))
 *   node = SHA256("satvault-pol-node" || left.hash || u64be(left.sum)
 *                                     || right.hash || u64be(right.sum))
 *
 * Amounts are BigInt throughout: JSON numbers past 2^53 lose digits in JSON.parse, so the
 * files are read by the small exact parser below (integers become BigInt).
 */
(function (exports) {
  "use strict";

  const U64_MAX = (1n << 64n) - 1n;
  const encoder = new TextEncoder();
  const LEAF_TAG = encoder.encode("satvault-pol-leaf-v2");
  const NODE_TAG = encoder.encode("satvault-pol-node");

  class ProofInvalid extends Error {}

  // ------------------------------------------------------------------ exact JSON parsing
  function parseJSON(text) {
    let i = 0;
    const fail = (msg) => { throw new ProofInvalid(`not JSON: ${msg} at character ${i}`); };
    const ws = () => { while (i < text.length && " \t\r\n".includes(text[i])) i++; };
    function value() {
      ws();
      const c = text[i];
      if (c === "{") {
        i++; const obj = Object.create(null); ws();
        if (text[i] === "}") { i++; return obj; }
        for (;;) {
          ws(); if (text[i] !== '"') fail("expected a key");
          const key = string(); ws();
          if (text[i] !== ":") fail("expected ':'");
          i++; obj[key] = value(); ws();
          if (text[i] === ",") { i++; continue; }
          if (text[i] === "}") { i++; return obj; }
          fail("expected ',' or '}'");
        }
      }
      if (c === "[") {
        i++; const arr = []; ws();
        if (text[i] === "]") { i++; return arr; }
        for (;;) {
          arr.push(value()); ws();
          if (text[i] === ",") { i++; continue; }
          if (text[i] === "]") { i++; return arr; }
          fail("expected ',' or ']'");
        }
      }
      if (c === '"') return string();
      for (const [word, v] of [["true", true], ["false", false], ["null", null]]) {
        if (text.startsWith(word, i)) { i += word.length; return v; }
      }
      const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(i, i + 400));
      if (!m || !m[0]) fail("unexpected character");
      i += m[0].length;
      // Integers stay exact; a fraction or exponent is kept as a Number (and refused later
      // wherever an integer is needed).
      return m[2] || m[3] ? Number(m[0]) : BigInt(m[0]);
    }
    function string() {
      const m = /^"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/.exec(
        text.slice(i));
      if (!m) fail("bad string");
      i += m[0].length;
      return JSON.parse(m[0]);
    }
    const out = value(); ws();
    if (i !== text.length) fail("trailing characters");
    return out;
  }

  // ---------------------------------------------------------------------- SHA-256
  // Used where WebCrypto is missing (a page served over plain http to another host).
  const K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2]);

  function sha256js(data) {
    const bitLen = data.length * 8;
    const padded = new Uint8Array(((data.length + 9 + 63) >> 6) << 6);
    padded.set(data);
    padded[data.length] = 0x80;
    const view = new DataView(padded.buffer);
    view.setUint32(padded.length - 8, Math.floor(bitLen / 0x100000000));
    view.setUint32(padded.length - 4, bitLen >>> 0);
    const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f,
                               0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
    const w = new Uint32Array(64);
    const rotr = (x, n) => (x >>> n) | (x << (32 - n));
    for (let off = 0; off < padded.length; off += 64) {
      for (let t = 0; t < 16; t++) w[t] = view.getUint32(off + 4 * t);
      for (let t = 16; t < 64; t++) {
        const s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >>> 3);
        const s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >>> 10);
        w[t] = (w[t - 16] + s0 + w[t - 7] + s1) >>> 0;
      }
      let [a, b, c, d, e, f, g, hh] = h;
      for (let t = 0; t < 64; t++) {
        const S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        const ch = (e & f) ^ (~e & g);
        const t1 = (hh + S1 + ch + K[t] + w[t]) >>> 0;
        const S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        const maj = (a & b) ^ (a & c) ^ (b & c);
        const t2 = (S0 + maj) >>> 0;
        hh = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
      }
      h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
    const out = new Uint8Array(32);
    const ov = new DataView(out.buffer);
    for (let t = 0; t < 8; t++) ov.setUint32(4 * t, h[t]);
    return out;
  }

  async function sha256subtle(data) {
    return new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", data));
  }

  function defaultDigest() {
    const c = globalThis.crypto;
    return c && c.subtle && typeof c.subtle.digest === "function" ? sha256subtle : sha256js;
  }

  // ---------------------------------------------------------------------- the format
  function u64be(n) {
    const out = new Uint8Array(8);
    new DataView(out.buffer).setBigUint64(0, n);
    return out;
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }

  const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

  function fromHex(value, what) {
    if (typeof value !== "string" || !/^[0-9a-fA-F]{64}$/.test(value)) {
      throw new ProofInvalid(`${what} is not 32 bytes of hex: ${JSON.stringify(value)}`);
    }
    const out = new Uint8Array(32);
    for (let k = 0; k < 32; k++) out[k] = parseInt(value.slice(2 * k, 2 * k + 2), 16);
    return out;
  }

  function u64(value, what) {
    if (typeof value === "number" && Number.isSafeInteger(value)) value = BigInt(value);
    if (typeof value !== "bigint" || value < 0n || value > U64_MAX) {
      throw new ProofInvalid(`${what} is not an unsigned 64-bit integer: ${String(value)}`);
    }
    return value;
  }

  function field(obj, key, what) {
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
      throw new ProofInvalid(`${what} is not a JSON object`);
    }
    if (!(key in obj)) throw new ProofInvalid(`${what} has no "${key}"`);
    return obj[key];
  }

  function equal(a, b) {
    if (a.length !== b.length) return false;
    let diff = 0;
    for (let k = 0; k < a.length; k++) diff |= a[k] ^ b[k];
    return diff === 0;
  }

  /**
   * Check `proof` against `root` (parsed objects, or the files' text). Resolves to
   * {account, balance_msat, height, root, total_msat, leaves} (amounts as BigInt) or
   * rejects with ProofInvalid naming the first check that failed.
   * options.expectedBalanceMsat: the customer's balance at that height (BigInt or string).
   * options.sha256: a digest function (default: WebCrypto, else the built-in one).
   */
  async function verify(root, proof, options = {}) {
    const digest = options.sha256 || defaultDigest();
    if (typeof root === "string") root = parseJSON(root);
    if (typeof proof === "string") proof = parseJSON(proof);
    // A leaf names its account: one customer's leaves never check as another's.
    const leafHash = async (account, nonce, balance) => {
      const name = encoder.encode(account);
      const size = new Uint8Array([name.length >> 8, name.length & 0xff]);
      return { hash: await digest(concat(LEAF_TAG, size, name, nonce, u64be(balance))),
               sum: balance };
    };
    const node = async (l, r) => {
      const sum = l.sum + r.sum;
      if (sum > U64_MAX) throw new RangeError("overflow");
      return { hash: await digest(concat(NODE_TAG, l.hash, u64be(l.sum), r.hash, u64be(r.sum))),
               sum };
    };

    const rootHash = fromHex(field(root, "root", "the root object"), "the root hash");
    const total = u64(field(root, "total_msat", "the root object"), "the root's total_msat");
    const height = u64(field(root, "height", "the root object"), "the root's height");
    const size = u64(field(root, "leaves", "the root object"), "the root's leaves");
    if (size < 1n || (size & (size - 1n)) !== 0n) {
      throw new ProofInvalid(`the root's leaves (${size}) is not a power of two`);
    }
    const depth = size.toString(2).length - 1;

    const account = field(proof, "account", "the proof");
    if (typeof account !== "string" || !account || encoder.encode(account).length > 0xffff) {
      throw new ProofInvalid(`the proof's account is not a name: ${String(account)}`);
    }
    const proofHeight = u64(field(proof, "height", "the proof"), "the proof's height");
    if (proofHeight !== height) {
      throw new ProofInvalid(`wrong height: the proof is for block height ${proofHeight}, the ` +
        `root for block height ${height} (they are from different publications)`);
    }
    const stated = u64(field(proof, "balance_msat", "the proof"), "the proof's balance_msat");
    const leaves = field(proof, "leaves", "the proof");
    if (!Array.isArray(leaves) || leaves.length === 0) {
      throw new ProofInvalid("the proof has no leaves");
    }

    const seen = new Set();
    const parsed = [];
    for (let n = 0; n < leaves.length; n++) {
      const leaf = leaves[n];
      const index = u64(field(leaf, "index", `leaf #${n}`), `leaf #${n}'s index`);
      const where = `leaf at index ${index}`;
      if (index >= size) throw new ProofInvalid(`${where} is outside the tree's ${size} leaves`);
      if (seen.has(index)) {
        throw new ProofInvalid(`extra leaf: index ${index} appears twice in the proof`);
      }
      seen.add(index);
      const nonce = fromHex(field(leaf, "nonce", where), `${where}: the nonce`);
      const balance = u64(field(leaf, "balance_msat", where), `${where}: balance_msat`);
      const path = field(leaf, "path", where);
      if (!Array.isArray(path)) throw new ProofInvalid(`${where}: the path is not a list`);
      if (path.length !== depth) {
        throw new ProofInvalid(`${where}: the path has ${path.length} steps, but a tree of ` +
          `${size} leaves needs ${depth} (path length mismatch)`);
      }
      const steps = [];
      let position = index;
      for (let k = 0; k < path.length; k++) {
        const at = `${where}, step ${k}`;
        const side = field(path[k], "side", at);
        if (side !== "left" && side !== "right") {
          throw new ProofInvalid(`${at}: side is ${JSON.stringify(side)}, not left or right`);
        }
        const expected = position % 2n === 0n ? "right" : "left";
        if (side !== expected) {
          throw new ProofInvalid(`${at}: the sibling is said to be on the ${side}, but index ` +
            `${index} puts it on the ${expected} (index/side mismatch)`);
        }
        steps.push({ sibling: { hash: fromHex(field(path[k], "hash", at), `${at}: the hash`),
                                sum: u64(field(path[k], "sum", at), `${at}: the sum`) },
                     side });
        position /= 2n;
      }
      parsed.push({ index, leaf: await leafHash(account, nonce, balance), steps });
    }

    const proven = parsed.reduce((s, p) => s + p.leaf.sum, 0n);
    if (proven !== stated) {
      throw new ProofInvalid(`the leaves add up to ${proven} msat, but the proof states a ` +
        `balance of ${stated} msat (a leaf was dropped or added, or a balance was changed)`);
    }
    for (const { index, leaf, steps } of parsed) {
      const where = `leaf at index ${index}`;
      let current = leaf;
      for (let k = 0; k < steps.length; k++) {
        const { sibling, side } = steps[k];
        try {
          current = side === "right" ? await node(current, sibling) : await node(sibling, current);
        } catch (e) {
          if (e instanceof RangeError) {
            throw new ProofInvalid(`${where}, step ${k}: the sums overflow 64 bits`);
          }
          throw e;
        }
      }
      if (current.sum !== total) {
        throw new ProofInvalid(`${where}: the sums along its path add up to ${current.sum} ` +
          `msat, not the published total of ${total} msat (a balance or a sum was changed)`);
      }
      if (!equal(current.hash, rootHash)) {
        throw new ProofInvalid(`${where}: its path does not hash to the published root ` +
          `${toHex(rootHash)} (wrong root, or a nonce, hash or sum was changed)`);
      }
    }
    const expected = options.expectedBalanceMsat;
    if (expected !== undefined && expected !== null && expected !== "") {
      if (!/^[0-9]+$/.test(String(expected))) {
        throw new ProofInvalid(`your balance must be a whole number of msat: ${expected}`);
      }
      if (BigInt(expected) !== proven) {
        throw new ProofInvalid(`the proof covers ${proven} msat, but your balance at block ` +
          `height ${height} was ${BigInt(expected)} msat (the balance proven is ` +
          `posted_msat + frozen_msat of the wallet)`);
      }
    }
    return { account, balance_msat: proven, height, root: toHex(rootHash), total_msat: total,
             leaves: size };
  }

  exports.ProofInvalid = ProofInvalid;
  exports.parseJSON = parseJSON;
  exports.sha256js = sha256js;
  exports.verify = verify;

  // ---------------------------------------------------------------------- the page
  if (typeof document === "undefined") return;

  const $ = (id) => document.getElementById(id);
  function loadInto(inputId, textId) {
    $(inputId).addEventListener("change", async (event) => {
      const file = event.target.files && event.target.files[0];
      if (file) $(textId).value = await file.text();
    });
  }
  const sats = (msat) => {
    const whole = msat / 1000n, rest = msat % 1000n;
    return rest ? `${whole}.${rest.toString().padStart(3, "0").replace(/0+$/, "")}` : `${whole}`;
  };

  async function run() {
    const out = $("result");
    out.className = "pending";
    out.textContent = "Checking…";
    try {
      const r = await verify($("root-text").value, $("proof-text").value,
                             { expectedBalanceMsat: $("expected").value.trim() });
      out.className = "ok";
      out.textContent = `Verified. Wallet ${r.account}: ${r.balance_msat} msat ` +
        `(${sats(r.balance_msat)} sat) is counted in the published total of ` +
        `${r.total_msat} msat (${sats(r.total_msat)} sat) at block height ${r.height}. ` +
        `Root ${r.root}.` + ($("expected").value.trim() ? "" :
          " Check that this is your wallet's balance at that height.");
    } catch (e) {
      out.className = "bad";
      out.textContent = e instanceof ProofInvalid ? `Not valid: ${e.message}`
                                                  : `Error: ${e && e.message ? e.message : e}`;
    }
  }

  function start() {
    loadInto("root-file", "root-text");
    loadInto("proof-file", "proof-text");
    $("verify").addEventListener("click", run);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})(typeof module !== "undefined" && module.exports ? module.exports
   : (globalThis.satvaultLiabilities = {}));
