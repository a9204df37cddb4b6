(function () {
  "use strict";
  var rows = JSON.parse(document.getElementById("rows-data").textContent);
  var table = document.getElementById("class-table");
  var body = table.tBodies[0];
  var trs = Array.prototype.slice.call(body.rows);
  var filter = document.getElementById("filter");
  var shown = document.getElementById("shown");

  function sortBy(th) {
    var key = th.getAttribute("data-key");
    var numeric = th.getAttribute("data-type") === "num";
    var descending = th.getAttribute("aria-sort") === "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) {
      cell.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var sign = descending ? -1 : 1;
    trs.sort(function (a, b) {
      var x = rows[+a.getAttribute("data-row")][key];
      var y = rows[+b.getAttribute("data-row")][key];
      var result;
      if (x === null || x === undefined) { result = (y === null || y === undefined) ? 0 : 1; return result; }
      if (y === null || y === undefined) { return -1; }
      if (numeric) { result = x - y; } else { result = String(x).localeCompare(String(y), undefined, {numeric: true}); }
      if (result === 0) { result = String(rows[+a.getAttribute("data-row")].id).localeCompare(String(rows[+b.getAttribute("data-row")].id)); }
      return sign * result;
    });
    trs.forEach(function (tr) { body.appendChild(tr); });
  }

  Array.prototype.forEach.call(table.querySelectorAll("th.sortable"), function (th) {
    th.setAttribute("tabindex", "0");
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(th); }
    });
  });

  function applyFilter() {
    var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    var count = 0;
    trs.forEach(function (tr) {
      var text = tr.textContent.toLowerCase();
      var match = words.every(function (word) { return text.indexOf(word) !== -1; });
      tr.hidden = !match;
      if (match) { count += 1; }
    });
    shown.textContent = count + " of " + trs.length + " shown";
  }
  filter.addEventListener("input", applyFilter);
})();
