// The only script the dashboard runs (served from the package; the CSP refuses any other).
"use strict";
document.addEventListener("keydown", (event) => {
  // "/" focuses the search box, as on many sites.
  const box = document.querySelector('input[name="q"]');
  if (event.key === "/" && box && document.activeElement !== box) {
    event.preventDefault();
    box.focus();
  }
});
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.classList.contains("delete") && !window.confirm("Invalidate this entry?")) {
    event.preventDefault();
  }
});
