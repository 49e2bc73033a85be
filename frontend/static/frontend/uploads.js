// The FileBrowser's uploads (frontend/templates/frontend/files.html, <section id="uploads">): pick a
// file, its SHA-256 is computed here, then it is sent in chunks to /api/v1/uploads (tenants/uploads.py)
// into the folder the page shows (data-area, data-path), with a progress bar. An interrupted upload
// resumes from the offset the server reports: at once with "Resume" after an error, or after a
// reload by choosing the same file again (the session's id is kept in sessionStorage).
//
// SHA-256: crypto.subtle on the whole file up to HASH_AT_ONCE_BYTES where the page is a secure
// context (https, localhost); otherwise (bigger files, plain http) the incremental SHA-256 below,
// reading the file a slice at a time, so a multi-GB checkpoint never sits in memory whole.
(function () {
  "use strict";
  var HASH_AT_ONCE_BYTES = 256 * 1024 * 1024;
  var HASH_SLICE_BYTES = 8 * 1024 * 1024;
  var STORE_KEY = "atelier-upload";
  var DONE_KEY = "atelier-upload-done";
  var API = "/api/v1/uploads";

  var section = document.getElementById("uploads");
  var main = document.getElementById("files");
  if (!section || !main) { return; }
  var area = main.dataset.area || section.dataset.area || "home";
  var folder = (main.dataset.path || section.dataset.path || "").replace(/^\/+|\/+$/g, "");
  var writable = (main.dataset.writable || section.dataset.writable) === "true";
  var csrfInput = document.querySelector("input[name=csrfmiddlewaretoken]");
  var csrf = csrfInput ? csrfInput.value : "";

  function element(tag, attributes, text) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) { node.setAttribute(name, attributes[name]); });
    if (text) { node.textContent = text; }
    return node;
  }

  var heading = element("h2", {}, "Upload");
  var label = element("label", {"for": "upload-file"}, "Upload a file into this folder");
  var input = element("input", {type: "file", id: "upload-file"});
  var progress = element("progress", {id: "upload-progress", max: "1", value: "0"});
  var status = element("p", {id: "upload-status", role: "status", "aria-live": "polite"});
  var resume = element("button", {type: "button", id: "upload-resume", "class": "button"}, "Resume");
  var cancel = element("button", {type: "button", id: "upload-cancel", "class": "button"}, "Cancel upload");
  // `hidden` alone loses to the site's `.button { display: … }`: set the display too (CSSOM, allowed by the CSP)
  function show(node, visible) {
    node.hidden = !visible;
    node.style.display = visible ? "" : "none";
  }
  show(resume, false);
  show(cancel, false);
  show(progress, false);
  section.appendChild(heading);
  if (!writable) {
    section.appendChild(element("p", {"class": "muted", id: "upload-read-only"}, "You cannot upload into this folder."));
    return;
  }
  [label, input, progress, resume, cancel, status].forEach(function (node) { section.appendChild(node); });

  var current = null; // {session, file}

  function say(text, isError) {
    status.textContent = text;
    status.className = isError ? "error" : "";
  }

  function sizeText(bytes) {
    var units = ["bytes", "KB", "MB", "GB", "TB"], value = bytes, unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return (unit === 0 ? value : value.toFixed(1)) + " " + units[unit];
  }

  function showProgress(offset, size) {
    show(progress, true);
    progress.max = size || 1;
    progress.value = size ? offset : 1;
  }

  function stored() {
    try { return JSON.parse(window.sessionStorage.getItem(STORE_KEY) || "null"); } catch (e) { return null; }
  }

  function remember(session, file) {
    window.sessionStorage.setItem(STORE_KEY, JSON.stringify({
      id: session.id, name: file.name, size: file.size, modified: file.lastModified, area: session.area, path: session.path
    }));
  }

  function forget() { window.sessionStorage.removeItem(STORE_KEY); }

  function request(method, url, body, headers) {
    var options = {method: method, credentials: "same-origin", headers: Object.assign({"Accept": "application/json"}, headers || {})};
    if (method !== "GET") { options.headers["X-CSRFToken"] = csrf; }
    if (body !== undefined) { options.body = body; }
    return fetch(url, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        return {status: response.status, ok: response.ok, data: data};
      });
    });
  }

  // --- SHA-256 -----------------------------------------------------------------------------------
  var K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ]);

  function Sha256() {
    this.h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
    this.w = new Uint32Array(64);
    this.pending = new Uint8Array(64);
    this.pendingLength = 0;
    this.length = 0;
  }

  Sha256.prototype.block = function (bytes, at) {
    var w = this.w, h = this.h, i;
    for (i = 0; i < 16; i++) {
      w[i] = (bytes[at + 4 * i] << 24) | (bytes[at + 4 * i + 1] << 16) | (bytes[at + 4 * i + 2] << 8) | bytes[at + 4 * i + 3];
    }
    for (i = 16; i < 64; i++) {
      var x = w[i - 15], y = w[i - 2];
      var s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      var s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (i = 0; i < 64; i++) {
      var t1 = (k + (((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7))) +
                ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
      var t2 = ((((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10))) +
                ((a & b) ^ (a & c) ^ (b & c))) | 0;
      k = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
  };

  Sha256.prototype.update = function (bytes) {
    var i = 0, n = bytes.length;
    this.length += n;
    if (this.pendingLength) {
      while (i < n && this.pendingLength < 64) { this.pending[this.pendingLength++] = bytes[i++]; }
      if (this.pendingLength < 64) { return; }
      this.block(this.pending, 0);
      this.pendingLength = 0;
    }
    for (; i + 64 <= n; i += 64) { this.block(bytes, i); }
    while (i < n) { this.pending[this.pendingLength++] = bytes[i++]; }
  };

  Sha256.prototype.hex = function () {
    var bits = this.length * 8;
    var tail = new Uint8Array(((this.pendingLength + 9 + 63) >> 6) << 6);
    tail.set(this.pending.subarray(0, this.pendingLength));
    tail[this.pendingLength] = 0x80;
    var high = Math.floor(bits / 0x100000000), low = bits >>> 0;
    for (var j = 0; j < 4; j++) {
      tail[tail.length - 8 + j] = (high >>> (24 - 8 * j)) & 0xff;
      tail[tail.length - 4 + j] = (low >>> (24 - 8 * j)) & 0xff;
    }
    for (var at = 0; at < tail.length; at += 64) { this.block(tail, at); }
    return Array.prototype.map.call(this.h, function (word) { return ("00000000" + word.toString(16)).slice(-8); }).join("");
  };

  function hexOf(buffer) {
    return Array.prototype.map.call(new Uint8Array(buffer), function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function fileSha256(file) {
    if (window.crypto && window.crypto.subtle && file.size <= HASH_AT_ONCE_BYTES) {
      return file.arrayBuffer().then(function (buffer) { return window.crypto.subtle.digest("SHA-256", buffer); }).then(hexOf);
    }
    var hash = new Sha256();
    function from(offset) {
      if (offset >= file.size) { return Promise.resolve(hash.hex()); }
      say("Computing the SHA-256 of " + file.name + ": " + Math.floor(100 * offset / file.size) + "%");
      return file.slice(offset, offset + HASH_SLICE_BYTES).arrayBuffer().then(function (buffer) {
        hash.update(new Uint8Array(buffer));
        return from(offset + HASH_SLICE_BYTES);
      });
    }
    return from(0);
  }
  window.atelierSha256Hex = function (bytes) { var h = new Sha256(); h.update(bytes); return h.hex(); }; // for tests

  // --- sending -----------------------------------------------------------------------------------
  function finished(session, file) {
    forget();
    showProgress(file.size, file.size);
    show(cancel, false);
    show(resume, false);
    window.sessionStorage.setItem(DONE_KEY, "Uploaded " + session.area + "/" + session.path + " (" + sizeText(file.size) + ").");
    window.location.reload();
  }

  function failed(text) {
    say(text, true);
    input.disabled = false;
  }

  function send(session, file) {
    current = {session: session, file: file};
    show(cancel, true);
    show(resume, false);
    input.disabled = true;
    var offset = session.offset;
    showProgress(offset, file.size);
    function next() {
      if (offset >= file.size) { return finished(session, file); }
      say("Uploading " + file.name + ": " + sizeText(offset) + " of " + sizeText(file.size));
      var end = Math.min(offset + session.chunk_size, file.size);
      return request("PUT", API + "/" + encodeURIComponent(session.id), file.slice(offset, end), {
        "Content-Range": "bytes " + offset + "-" + (end - 1) + "/" + file.size,
        "Content-Type": "application/octet-stream"
      }).then(function (answer) {
        if (answer.status === 409 && typeof answer.data.offset === "number") {
          offset = answer.data.offset;  // the server stands elsewhere: go on from there
          return next();
        }
        if (!answer.ok) {
          if (answer.status >= 500) {  // the server's trouble: the session stands, try again from it
            show(resume, true);
            return failed("The server could not store the chunk (HTTP " + answer.status + "): press Resume to try again.");
          }
          forget();  // refused for good: failed verification, the name taken meanwhile, a cancelled session
          show(cancel, false);
          return failed("The upload was refused: " + (answer.data.error || "HTTP " + answer.status));
        }
        offset = answer.data.offset;
        showProgress(offset, file.size);
        if (answer.data.state === "complete") { return finished(session, file); }
        return next();
      }, function () {
        show(resume, true);
        failed("The connection was interrupted at " + sizeText(offset) + " of " + sizeText(file.size) +
               ": press Resume to go on from there.");
      });
    }
    return next();
  }

  function resumeFrom(id, file) {
    return request("GET", API + "/" + encodeURIComponent(id)).then(function (answer) {
      if (!answer.ok || answer.data.state !== "open") {
        forget();
        return null;
      }
      say("Resuming " + file.name + " from " + sizeText(answer.data.offset) + ".");
      return send(answer.data, file);
    });
  }

  function start(file) {
    var pending = stored();
    if (pending && pending.name === file.name && pending.size === file.size && pending.modified === file.lastModified) {
      return resumeFrom(pending.id, file).then(function (resumed) { return resumed === null ? begin(file) : resumed; });
    }
    return begin(file);
  }

  function begin(file) {
    input.disabled = true;
    say("Computing the SHA-256 of " + file.name + "…");
    return fileSha256(file).then(function (sha256) {
      var path = (folder ? folder + "/" : "") + file.name;
      return request("POST", API, JSON.stringify({area: area, path: path, size: file.size, sha256: sha256}),
                     {"Content-Type": "application/json"});
    }).then(function (answer) {
      if (answer.status !== 201) {
        return failed("The upload was refused: " + (answer.data.error || "HTTP " + answer.status));
      }
      remember(answer.data, file);
      if (answer.data.state === "complete") { return finished(answer.data, file); }
      return send(answer.data, file);
    }, function (error) { failed("The upload could not start: " + error); });
  }

  input.addEventListener("change", function () {
    if (input.files && input.files.length) { start(input.files[0]); }
  });
  resume.addEventListener("click", function () {
    if (current) { resumeFrom(current.session.id, current.file); }
  });
  cancel.addEventListener("click", function () {
    var pending = current ? current.session.id : (stored() || {}).id;
    if (!pending) { return; }
    request("DELETE", API + "/" + encodeURIComponent(pending)).then(function () {
      forget();
      current = null;
      show(cancel, false);
      show(resume, false);
      show(progress, false);
      input.disabled = false;
      input.value = "";
      say("The upload was cancelled.");
    });
  });

  // The member's storage use and limit, where the FileBrowser's listing reports it (`usage`).
  var usageLine = element("p", {id: "upload-usage", "class": "muted"});
  section.appendChild(usageLine);
  request("GET", "/api/v1/files/home/").then(function (answer) {
    var usage = answer.ok && answer.data.usage;
    if (!usage) { return; }
    usageLine.textContent = "Your storage: " + sizeText(usage.used_bytes) +
      (usage.limit_bytes === null || usage.limit_bytes === undefined ? " used (no limit)" : " of " + sizeText(usage.limit_bytes) + " used");
  });

  var done = window.sessionStorage.getItem(DONE_KEY);
  if (done) {
    window.sessionStorage.removeItem(DONE_KEY);
    say(done);
  }
  var interrupted = stored();
  if (interrupted) {
    request("GET", API + "/" + encodeURIComponent(interrupted.id)).then(function (answer) {
      if (!answer.ok || answer.data.state !== "open") { forget(); return; }
      showProgress(answer.data.offset, answer.data.size);
      show(cancel, true);
      say("The upload of " + interrupted.name + " to " + answer.data.area + "/" + answer.data.path + " stopped at " +
          sizeText(answer.data.offset) + " of " + sizeText(answer.data.size) + ": choose the same file again to resume.");
    });
  }
})();
