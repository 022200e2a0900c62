"""A self-contained API explorer for /docs: FastAPI's Swagger UI loads from a CDN and fails offline.

Plain HTML and ~60 lines of JS that read /openapi.json and let you call each route; no external assets.
The CDN Swagger UI stays reachable at /docs/swagger for machines with internet access.
"""

from __future__ import annotations

HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Leaderboard API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:980px;padding:1rem;color:#222}
h1{font-size:1.3rem} details{border:1px solid #ccc;border-radius:6px;margin:.4rem 0;padding:.3rem .6rem}
summary{cursor:pointer} .m{display:inline-block;min-width:3.5rem;font-weight:600}
.get{color:#0a6} .post{color:#06c} label{display:block;margin:.2rem 0} input,textarea{font:inherit;width:60%}
pre{background:#f5f5f5;padding:.5rem;overflow:auto;max-height:28rem} small{color:#666}
</style></head><body>
<h1>Leaderboard read API</h1>
<p><small>Offline explorer over <a href="/openapi.json">/openapi.json</a>.
Swagger UI (needs internet): <a href="/docs/swagger">/docs/swagger</a>.</small></p>
<div id="ops">loading /openapi.json ...</div>
<script>
const esc = s => String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
fetch('/openapi.json').then(r => r.json()).then(spec => {
  const out = [];
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const params = (op.parameters || []).map(p =>
        `<label>${esc(p.name)} <small>(${p.in}${p.required ? ', required' : ''})
         ${esc((p.description || p.schema?.description || '').slice(0, 160))}</small><br>
         <input data-in="${p.in}" name="${esc(p.name)}"
          placeholder="${esc(p.schema?.default ?? '')}"></label>`
      ).join('');
      const body = op.requestBody ? '<label>JSON body<br><textarea rows="3" name="__body">' +
        '{"player_ids": ["p1", "p2"]}</textarea></label>' : '';
      out.push(`<details><summary><span class="m ${method}">${method.toUpperCase()}</span>
        ${esc(path)} <small>${esc(op.summary || '')}</small></summary>
        <form data-path="${esc(path)}" data-method="${method}">${params}${body}
        <button>Send</button></form><pre hidden></pre></details>`);
    }
  }
  document.getElementById('ops').innerHTML = out.join('');
  for (const form of document.querySelectorAll('form')) form.onsubmit = async ev => {
    ev.preventDefault();
    let path = form.dataset.path; const q = new URLSearchParams(); let body;
    for (const el of form.elements) {
      if (!el.name || el.value === '') continue;
      if (el.name === '__body') body = el.value;
      else if (el.dataset.in === 'path')
        path = path.replace('{' + el.name + '}', encodeURIComponent(el.value));
      else q.append(el.name, el.value);
    }
    const url = path + (q.toString() ? '?' + q : '');
    const pre = form.nextElementSibling; pre.hidden = false;
    if (path.endsWith('/stream')) {
      pre.textContent = 'open ' + url + ' in a new tab (text/event-stream)'; return;
    }
    const r = await fetch(url, {method: form.dataset.method.toUpperCase(), body,
      headers: body ? {'content-type': 'application/json'} : {}});
    const text = await r.text();
    let shown = text; try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) {}
    pre.textContent = `GET ${url}\\n${r.status} ${r.headers.get('content-type') || ''}\\n\\n${shown}`
      .replace(/^GET/, form.dataset.method.toUpperCase());
  };
}).catch(e => { document.getElementById('ops').textContent = 'could not load /openapi.json: ' + e; });
</script></body></html>
"""
