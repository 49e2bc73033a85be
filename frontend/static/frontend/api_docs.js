// Starts Swagger UI on /docs (a file, not an inline script: the site's CSP allows scripts from /static/ only).
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.schemaUrl,
    domNode: root,
    deepLinking: true,
    persistAuthorization: false,
    tryItOutEnabled: true,
    displayRequestDuration: true,
    validatorUrl: null, // never call swagger.io
    withCredentials: true,
    onComplete: function () { root.setAttribute("data-loaded", ""); },
  });
})();
