// frontend/templates/frontend/workspace_starting.html: poll the workspace status, reload once it runs.
(function poll(delay) {
  setTimeout(function () {
    fetch(document.body.dataset.statusUrl, {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : {status: "starting"}; })
      .then(function (s) {
        if (s.status === "running") { window.location.reload(); }
        else { poll(s.status === "crashed" ? 2000 : 500); }
      })
      .catch(function () { poll(2000); });
  }, delay);
})(500);
