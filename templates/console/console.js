// The console's only script: shows every <time datetime> in the viewer's
// time zone and keeps the character counters of text areas up to date.
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  document.querySelectorAll("time[datetime]").forEach(function (element) {
    var at = new Date(element.getAttribute("datetime"));
    if (!isNaN(at.getTime())) {
      element.title = element.textContent;
      element.textContent = format.format(at);
    }
  });
  document.querySelectorAll("textarea[data-counter]").forEach(function (area) {
    var output = document.getElementById(area.getAttribute("data-counter"));
    if (!output) {
      return;
    }
    var update = function () {
      output.textContent = String(Array.from(area.value).length);
    };
    area.addEventListener("input", update);
    update();
  });
})();
