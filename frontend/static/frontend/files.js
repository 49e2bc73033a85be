// The FileBrowser page (frontend/templates/frontend/files.html): new folder, rename, move and
// delete through the JSON API (/api/v1/files/<area>/<path>), with the page's CSRF token.
(function () {
  "use strict";
  var main = document.getElementById("files");
  if (!main) { return; }
  var area = main.dataset.area;
  var folder = main.dataset.path || "";
  var message = document.getElementById("files-message");
  var csrf = document.querySelector("input[name=csrfmiddlewaretoken]");

  function apiUrl(path) {
    return main.dataset.api + encodeURIComponent(area) + "/" + path.split("/").map(encodeURIComponent).join("/");
  }

  function inFolder(name) { return folder ? folder + "/" + name : name; }

  function show(text) {
    message.textContent = text;
    message.hidden = false;
  }

  function call(method, path, body) {
    var options = {method: method, credentials: "same-origin",
                   headers: {"X-CSRFToken": csrf ? csrf.value : "", "Accept": "application/json"}};
    if (body) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(apiUrl(path), options).then(function (response) {
      if (response.ok) { window.location.reload(); return; }
      return response.json().then(function (answer) { show(answer.error || ("HTTP " + response.status)); },
                                  function () { show("HTTP " + response.status); });
    }, function () { show("The server could not be reached: try again."); });
  }

  var form = document.getElementById("new-folder-form");
  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var name = document.getElementById("new-folder-name").value.trim();
      if (name) { call("POST", inFolder(name), {action: "mkdir"}); }
    });
  }

  document.querySelectorAll("tr.file-row button[data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      var row = button.closest("tr");
      var name = row.dataset.name;
      var path = row.dataset.path;
      var action = button.dataset.action;
      if (action === "delete") {
        var what = row.dataset.type === "folder" ? "the folder " + name + " and everything in it" : name;
        if (window.confirm("Delete " + what + "?")) { call("DELETE", path); }
      } else if (action === "rename") {
        var newName = window.prompt("New name for " + name, name);
        if (newName && newName.trim() && newName.trim() !== name) {
          call("POST", path, {action: "move", to: inFolder(newName.trim())});
        }
      } else if (action === "move") {
        var target = window.prompt("Move " + name + " into which folder? (a path in this area; empty: the top)", folder);
        if (target !== null) {
          target = target.trim().replace(/^\/+|\/+$/g, "");
          call("POST", path, {action: "move", to: target ? target + "/" + name : name});
        }
      }
    });
  });
})();
