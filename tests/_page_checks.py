"""What a person checks by eye on a widget page, as numbers the browser computes: contrast of every text against
what is behind it, overlapping text boxes, repeated tick labels. Used by the first-impression browser tests."""

from __future__ import annotations

from typing import Any

TEXTS_JS = r"""
(root) => {
  const parse = (c) => {
    const m = c && c.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (fg, bg) => [0, 1, 2].map(i => fg[i] * fg[3] + bg[i] * (1 - fg[3])).concat([1]);
  const backgroundOf = (el) => {
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const style = getComputedStyle(node);
      const c = parse(style.backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = [255, 255, 255, 1];
    for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
    return bg;
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const contrast = (a, b) => {
    const x = lum(a), y = lum(b);
    return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
  };
  // What a person can see: displayed, not hidden, and not faded out (d3 leaves exiting ticks at opacity 1e-6
  // while they leave; their effective opacity is the product over the ancestors).
  const visible = (el) => {
    let opacity = 1;
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const s = getComputedStyle(node);
      if (s.display === 'none' || s.visibility === 'hidden') return false;
      opacity *= parseFloat(s.opacity || '1');
    }
    return opacity >= 0.1;
  };
  const out = [];
  const roots = Array.from(document.querySelectorAll(root));
  for (const r of roots) {
    // SVG text (bqplot titles, axis labels, ticks, mark labels)
    for (const t of r.querySelectorAll('svg text')) {
      const text = (t.textContent || '').trim();
      if (!text || !visible(t)) continue;
      const box = t.getBoundingClientRect();
      if (box.width < 1 || box.height < 1) continue;
      const s = getComputedStyle(t);
      const fill = parse(s.fill);
      if (!fill) continue;
      const opacity = parseFloat(s.fillOpacity || '1') * parseFloat(s.opacity || '1');
      const bg = backgroundOf(t.closest('.bqplot') || t.parentElement);
      const fg = over([fill[0], fill[1], fill[2], fill[3] * opacity], bg);
      out.push({kind: 'svg', text, box: [box.left, box.top, box.right, box.bottom], contrast: contrast(fg, bg),
                color: s.fill, background: 'rgb(' + bg.slice(0, 3).map(Math.round).join(',') + ')'});
    }
    // HTML text: every visible text node, measured by its own glyph boxes
    const walker = document.createTreeWalker(r, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const text = node.textContent.trim();
      const el = node.parentElement;
      if (!text || !el || el.closest('svg, style, script, option, select') || !visible(el)) continue;
      const range = document.createRange();
      range.selectNodeContents(node);
      const rects = Array.from(range.getClientRects()).filter(b => b.width >= 1 && b.height >= 1);
      if (!rects.length) continue;
      const s = getComputedStyle(el);
      const color = parse(s.color);
      const bg = backgroundOf(el);
      const fg = over([color[0], color[1], color[2], color[3] * parseFloat(s.opacity || '1')], bg);
      const id = out.length;
      for (const b of rects) {
        out.push({kind: 'html', node: id, text, box: [b.left, b.top, b.right, b.bottom], contrast: contrast(fg, bg),
                  color: s.color, background: 'rgb(' + bg.slice(0, 3).map(Math.round).join(',') + ')'});
      }
    }
  }
  return out;
}
"""

TICKS_JS = r"""
(root) => {
  const out = [];
  for (const axis of document.querySelectorAll(root + ' .bqplot g.axis')) {
    if (getComputedStyle(axis).display === 'none' || axis.closest('[style*="display: none"]')) continue;
    const ticks = Array.from(axis.querySelectorAll('.tick text'))
      .filter(t => t.getBoundingClientRect().width > 0)
      .map(t => { const b = t.getBoundingClientRect(); return {text: t.textContent.trim(), x: b.left, y: b.top}; });
    if (!ticks.length) continue;
    const label = (axis.querySelector('text.axislabel') || {}).textContent || '';
    const horizontal = ticks.length > 1 && Math.abs(ticks[0].y - ticks[ticks.length - 1].y) < 2;
    ticks.sort((a, b) => horizontal ? a.x - b.x : a.y - b.y);
    out.push({label, ticks: ticks.map(t => t.text)});
  }
  return out;
}
"""


def texts(page: Any, root: str = ".gw-app") -> list[dict]:
    """Every visible text inside ``root``: its box, colour, background and WCAG contrast."""
    return page.evaluate(TEXTS_JS, root)


def low_contrast(items: list[dict], minimum: float = 4.5) -> list[dict]:
    return [t for t in items if t["contrast"] < minimum]


def overlapping(items: list[dict], tolerance: float = 1.0) -> list[tuple[str, str]]:
    """Pairs of different texts whose boxes overlap by more than ``tolerance`` px in both directions."""
    pairs = []
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            (al, at, ar, ab), (bl, bt, br, bb) = a["box"], b["box"]
            width = min(ar, br) - max(al, bl)
            height = min(ab, bb) - max(at, bt)
            same_node = a.get("node") is not None and a.get("node") == b.get("node")
            if width > tolerance and height > tolerance and not same_node:
                pairs.append((a["text"], b["text"]))
    return pairs


def axes(page: Any, root: str = ".gw-app") -> list[dict]:
    """Tick labels of every visible axis, in reading order."""
    return page.evaluate(TICKS_JS, root)


def repeated_ticks(axis_list: list[dict]) -> list[dict]:
    """Axes on which two neighbouring tick labels read the same ("0 0 0 1 1")."""
    return [a for a in axis_list if any(x == y for x, y in zip(a["ticks"], a["ticks"][1:], strict=False))]
