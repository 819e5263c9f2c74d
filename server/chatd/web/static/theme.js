// theme.js: a classic (blocking) script in <head> that applies the remembered theme
// before the first paint, so a dark-theme user never sees a flash of the light one.
// app.js owns the toggle; this only reads what it stored.
try {
  const theme = JSON.parse(localStorage.getItem("chatd.theme"));
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
} catch {
  // no storage: follow prefers-color-scheme
}
