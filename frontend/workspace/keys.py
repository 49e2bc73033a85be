"""The workspace's keyboard shortcuts (A1111's): Ctrl+Enter (⌘+Enter) in a prompt box generates.

A page-load event with only `js` (no Python function) installs one `keydown` listener on the
document: in a textarea whose field id is `atelier-<tab>-prompt` or `atelier-<tab>-negative`,
Ctrl/⌘+Enter clicks that tab's `atelier-<tab>-generate` button (txt2img, img2img, BeautifulPrompt
alike), so it does exactly what the button does. The workspace's Content-Security-Policy
(`frontend/proxy.py`) allows the page's inline script, which Gradio itself needs; nothing is
loaded from elsewhere.
"""

from __future__ import annotations

CTRL_ENTER_JS = """() => {
  if (window.atelierCtrlEnter) return;
  window.atelierCtrlEnter = true;
  document.addEventListener('keydown', (event) => {
    if (event.key !== 'Enter' || !(event.ctrlKey || event.metaKey) || event.isComposing) return;
    const field = event.target && event.target.closest
      ? event.target.closest('[id^="atelier-"][id$="-prompt"], [id^="atelier-"][id$="-negative"]') : null;
    if (!field) return;
    const tab = field.id.replace(/^atelier-/, '').replace(/-(prompt|negative)$/, '');
    const button = document.getElementById('atelier-' + tab + '-generate');
    if (!button) return;
    event.preventDefault();
    button.click();
  }, true);
}"""
