// MathJax 3 settings for pymdownx.arithmatex (generic mode): it wraps every formula in
// \( \) or \[ \] inside an element of class "arithmatex", and only those are typeset.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// No document$ subscription: the site does not use Material's instant navigation, so every
// page is a full load and MathJax typesets it at startup.
