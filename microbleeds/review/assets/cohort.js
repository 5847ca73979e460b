document.querySelectorAll('#t th').forEach(function (th, i) {
  let asc = true;
  th.addEventListener('click', function () {
    const tb = document.querySelector('#t tbody');
    const rs = Array.from(tb.rows);
    rs.sort(function (a, b) {
      const x = a.cells[i].textContent, y = b.cells[i].textContent;
      const nx = parseFloat(x), ny = parseFloat(y);
      const r = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? r : -r;
    });
    asc = !asc;
    rs.forEach(function (r) { tb.appendChild(r); });
  });
});
