// Draws each <canvas data-chart="{labels, datasets}"> as a stacked bar chart (Chart.js, shipped in vendor/).
(function () {
  "use strict";
  function draw(canvas) {
    var data = JSON.parse(canvas.getAttribute("data-chart"));
    if (!data.labels.length) {
      canvas.setAttribute("data-empty", "true");
    }
    var chart = new Chart(canvas, {
      type: "bar",
      data: data,
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } },
        plugins: { legend: { position: "bottom" } }
      }
    });
    canvas.setAttribute("data-drawn", String(chart.data.datasets.length));
  }
  document.querySelectorAll("canvas[data-chart]").forEach(draw);
})();
