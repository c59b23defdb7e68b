// cgtool graph --format html: pan and zoom, hover details, gradient paths of a parameter,
// collapsing module boxes, and a search box, over the SVG that Graphviz laid out.
// Everything it needs is in the page: the view's JSON (#cg-data) and the SVG (ids n3, e4, g0).
(function () {
  "use strict";
  var page = JSON.parse(document.getElementById("cg-data").textContent);
  var canvas = document.getElementById("canvas");
  var tip = document.getElementById("tip");
  var panel = document.getElementById("panel");
  var search = document.getElementById("search");
  var foldButton = document.getElementById("fold");
  var hint = panel.innerHTML;
  var shown = { "": canvas.querySelector("svg") };  // variant label -> its SVG element, once made
  var data, svg, nodes, groups, collapsed, vb, home;

  // ---------------------------------------------------------------- the view shown: the page's, or one folded node drawn open
  function show(label) {
    var next = label ? page.variants[label] : page;
    if (!shown[label]) {
      var template = document.getElementById(next.template);
      shown[label] = template.content.firstElementChild.cloneNode(true);
    }
    if (svg && svg !== shown[label]) canvas.replaceChild(shown[label], svg);
    svg = shown[label];
    data = next;
    nodes = {}; groups = {}; collapsed = {};
    data.nodes.forEach(function (n) { nodes[n.id] = n; });
    data.groups.forEach(function (g) { groups[g.id] = g; });
    // Graphviz's own tooltips (<title>) would double the hover box
    Array.prototype.forEach.call(svg.querySelectorAll("title"), function (t) { t.parentNode.removeChild(t); });
    Array.prototype.forEach.call(svg.querySelectorAll("a"), function (a) {
      a.removeAttributeNS("http://www.w3.org/1999/xlink", "title");
      a.removeAttribute("title");
    });
    if (!svg.cgHome) {
      var b = svg.viewBox.baseVal;
      svg.cgHome = { x: b.x, y: b.y, w: b.width, h: b.height };
    }
    home = svg.cgHome;
    tip.style.display = "none";
    document.getElementById("facts").textContent = data.nodes.length + (data.nodes.length === 1 ? " node, " : " nodes, ") +
      data.edges.length + (data.edges.length === 1 ? " edge" : " edges") + " at the " + data.level + " level; " +
      data.values + " values in this input's graph";
    foldButton.hidden = !label;
    if (label) foldButton.textContent = "fold " + label + " again";
    document.body.setAttribute("data-view", label || "");
    clear();
    if (label) {
      panel.innerHTML = "<h2>" + esc(label) + " drawn open</h2><div>" + (data.opened.length ? esc(describeOpen(label)) : "") +
        "</div><div class=hint>the button at the top folds it again</div>";
    }
  }
  function describeOpen(label) {
    var rest = data.nodes.filter(function (n) { return n.repeat; }).map(function (n) { return n.label + " ×" + n.repeat; });
    return page.nodes.some(function (n) { return n.label === label && n.repeat; })
      ? "its first copy in full; the other copies folded" + (rest.length ? " (" + rest.join(", ") + ")" : "")
      : "its inside, modules within folded";
  }

  function el(id) { return svg.getElementById ? svg.getElementById(id) : document.getElementById(id); }
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; });
  }
  function shape(s) { return s.length ? "[" + s.join(", ") + "]" : "scalar"; }
  function num(x) { return Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(3) : String(+x.toPrecision(4)); }

  // ---------------------------------------------------------------- pan and zoom (the viewBox)
  function box() { var b = svg.viewBox.baseVal; return { x: b.x, y: b.y, w: b.width, h: b.height }; }
  function setBox(b) { svg.setAttribute("viewBox", [b.x, b.y, b.w, b.h].join(" ")); }
  function toSvg(clientX, clientY) {
    var pt = svg.createSVGPoint();
    pt.x = clientX; pt.y = clientY;
    return pt.matrixTransform(svg.getScreenCTM().inverse());
  }
  function fit() { setBox(home); }
  canvas.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var k = Math.exp(ev.deltaY * 0.0015), b = box(), p = toSvg(ev.clientX, ev.clientY);
    setBox({ x: p.x - (p.x - b.x) * k, y: p.y - (p.y - b.y) * k, w: b.w * k, h: b.h * k });
  }, { passive: false });
  var drag = null, moved = false;
  canvas.addEventListener("mousedown", function (ev) {
    drag = { x: ev.clientX, y: ev.clientY, b: box() };
    moved = false;
  });
  window.addEventListener("mousemove", function (ev) {
    if (!drag) return;
    var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) { moved = true; canvas.classList.add("dragging"); }
    if (!moved) return;
    var r = svg.getBoundingClientRect();
    var k = Math.max(drag.b.w / r.width, drag.b.h / r.height);
    setBox({ x: drag.b.x - dx * k, y: drag.b.y - dy * k, w: drag.b.w, h: drag.b.h });
  });
  window.addEventListener("mouseup", function () { drag = null; canvas.classList.remove("dragging"); });
  document.getElementById("fit").addEventListener("click", fit);

  // ---------------------------------------------------------------- hover: shape, value summary, spec line
  function describe(n) {
    var lines = [n.label + "  (" + (n.repeat ? n.repeat + " repeated blocks" : n.kind) + ")"];
    lines.push("shape " + shape(n.shape) + (n.dtype ? "  " + n.dtype : ""));
    if (n.trainable === true) lines.push("trainable parameter");
    if (n.trainable === false) lines.push("constant: not trained");
    if (n.value) {
      if ("value" in n.value) lines.push("value " + num(n.value.value));
      else lines.push("min " + num(n.value.min) + "  max " + num(n.value.max) + "  mean " + num(n.value.mean) + "  norm " + num(n.value.norm));
    }
    if (n.text && n.text !== n.label) lines.push(n.text);
    if (n.names.length) lines.push("named " + n.names.join(", "));
    if (n.folded > 1) lines.push(n.folded + " values folded into this node");
    if (n.loc) lines.push(n.loc);
    return lines.join("\n");
  }
  canvas.addEventListener("mousemove", function (ev) {
    var g = ev.target.closest && ev.target.closest("g.node");
    if (!g || !nodes[g.id]) { tip.style.display = "none"; return; }
    var r = canvas.getBoundingClientRect();
    tip.textContent = describe(nodes[g.id]);
    tip.style.left = (ev.clientX - r.left + 14) + "px";
    tip.style.top = (ev.clientY - r.top + 14) + "px";
    tip.style.display = "block";
  });
  canvas.addEventListener("mouseleave", function () { tip.style.display = "none"; });

  // ---------------------------------------------------------------- highlight: a parameter's gradient paths
  function all(sel) { return Array.prototype.slice.call(svg.querySelectorAll(sel)); }
  function clear() {
    all(".cg-hl, .cg-dim, .cg-match").forEach(function (e) { e.classList.remove("cg-hl", "cg-dim", "cg-match"); });
    panel.innerHTML = hint;
    document.body.removeAttribute("data-highlight");
  }
  function highlight(h) {
    clear();
    var on = {};
    h.nodes.concat(h.edges).forEach(function (id) { on[id] = true; });
    all("g.node, g.edge").forEach(function (g) { g.classList.add(on[g.id] ? "cg-hl" : "cg-dim"); });
    document.body.setAttribute("data-highlight", h.name);
    var html = "<h2>∂" + esc(h.root) + "/∂" + esc(h.name) + ": " + esc(h.path_count_text) +
      (h.path_count === 1 ? " path" : " paths") + "</h2>";
    if (h.gradient !== null) html += "<div>gradient <span class=num>" + esc(h.gradient) + "</span></div>";
    if (h.symbolic) html += "<div class=sym>= " + esc(h.symbolic) + "</div>";
    if (h.paths.length) {
      html += "<ol>";
      h.paths.forEach(function (p) {
        html += "<li>" + p.nodes.map(esc).join(" ← ");
        if (p.contribution) html += "<br><span class=num>" + (p.contribution.charAt(0) === "|" ? "" : "contribution ") + esc(p.contribution) + "</span>";
        if (p.symbolic) html += " <span class=sym>" + esc(p.symbolic) + "</span>";
        html += "</li>";
      });
      html += "</ol>";
      if (h.path_count > h.paths.length) html += "<div class=hint>more not listed</div>";
    } else if (h.path_count) {
      html += "<div class=hint>too many to list here: <code>cgtool paths SPEC --wrt " + esc(h.name) +
        "</code> lists the largest</div>";
    } else {
      html += "<div class=hint>no path: the root does not depend on it</div>";
    }
    var labels = Object.keys(h.edge_labels || {});
    if (labels.length) {
      html += "<div>local derivatives:</div><ul>";
      labels.forEach(function (id) { html += "<li>" + esc(h.edge_labels[id]) + "</li>"; });
      html += "</ul>";
    }
    panel.innerHTML = html;
  }

  // ---------------------------------------------------------------- boxes: collapse and expand a module call
  function inside(n, gid) {
    var g = n.group;
    while (g) { if (g === gid) return true; g = groups[g] ? groups[g].parent : null; }
    return false;
  }
  function toggle(gid) {
    var grp = groups[gid];
    if (!grp) return;
    var closing = !collapsed[gid];
    collapsed[gid] = closing;
    var hidden = {};
    data.nodes.forEach(function (n) {
      var hide = false;
      Object.keys(collapsed).forEach(function (c) { if (collapsed[c] && inside(n, c) && n.label !== groups[c].label) hide = true; });
      hidden[n.id] = hide;
      var g = el(n.id);
      if (g) g.classList.toggle("cg-hidden", hide);
    });
    data.edges.forEach(function (e) {
      var g = el(e.id);
      if (g) g.classList.toggle("cg-hidden", hidden[e.source] && hidden[e.target]);
    });
    Object.keys(groups).forEach(function (c) {
      var g = el(c);
      if (!g) return;
      g.classList.toggle("cg-collapsed", !!collapsed[c]);
      var parentClosed = false, p = groups[c].parent;
      while (p) { if (collapsed[p]) parentClosed = true; p = groups[p].parent; }
      g.classList.toggle("cg-hidden", parentClosed);
    });
    panel.innerHTML = "<h2>" + esc(grp.label) + "</h2><div>" + (closing ? "collapsed: " + grp.nodes + " values inside, hidden; click the box again to expand it"
      : "expanded: " + grp.nodes + " values") + "</div>";
  }

  // ---------------------------------------------------------------- clicks
  canvas.addEventListener("click", function (ev) {
    if (moved) return;
    var g = ev.target.closest && ev.target.closest("g.node, g.cluster");
    if (!g) { clear(); return; }
    if (g.classList.contains("cluster")) { toggle(g.id); return; }
    var n = nodes[g.id];
    if (!n) return;
    var h = data.parameters[n.label];
    if (h) { highlight(h); return; }
    var own = data.groups.filter(function (grp) { return grp.label === n.label; })[0];
    if (own) { toggle(own.id); return; }
    if (n.folded > 1 && page.variants[n.label] && !data.opened.length) { show(n.label); return; }
    clear();
    var html = "<h2>" + esc(n.label) + "</h2><pre>" + esc(describe(n)) + "</pre>";
    if (n.repeat) html += "<div class=hint>" + n.repeat + " copies of a repeated block, drawn as one node; cgtool graph --expand draws each</div>";
    else if (n.folded > 1) html += "<div class=hint>a folded module; a larger --depth draws its inside</div>";
    panel.innerHTML = html;
  });
  document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") { clear(); search.value = ""; } });

  // ---------------------------------------------------------------- search by name
  function centre(id) {
    var g = el(id);
    if (!g) return;
    var r = g.getBoundingClientRect(), a = toSvg(r.left, r.top), b = toSvg(r.right, r.bottom), cur = box();
    var w = Math.min(cur.w, Math.max(home.w / 3, (b.x - a.x) * 6)), h = cur.h * w / cur.w;
    setBox({ x: (a.x + b.x) / 2 - w / 2, y: (a.y + b.y) / 2 - h / 2, w: w, h: h });
  }
  function find() {
    var q = search.value.trim().toLowerCase();
    all(".cg-match, .cg-dim").forEach(function (e) { e.classList.remove("cg-match", "cg-dim"); });
    if (!q) return [];
    var hits = data.nodes.filter(function (n) {
      return n.label.toLowerCase().indexOf(q) >= 0 || n.names.some(function (m) { return m.toLowerCase().indexOf(q) >= 0; });
    }).map(function (n) { return n.id; });
    var on = {};
    hits.forEach(function (id) { on[id] = true; });
    all("g.node").forEach(function (g) { g.classList.add(on[g.id] ? "cg-match" : "cg-dim"); });
    all("g.edge").forEach(function (g) { g.classList.add("cg-dim"); });
    document.getElementById("matches").textContent = hits.length + (hits.length === 1 ? " match" : " matches");
    return hits;
  }
  search.addEventListener("input", function () { find(); if (!search.value) document.getElementById("matches").textContent = ""; });
  search.addEventListener("keydown", function (ev) { if (ev.key === "Enter") { var hits = find(); if (hits.length) centre(hits[0]); } });

  foldButton.addEventListener("click", function () { show(""); fit(); });
  show("");
  fit();
  document.body.setAttribute("data-ready", "yes");
})();
