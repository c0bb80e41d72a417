// Demo app behind nginx: shows the identity headers the outpost provided.
'use strict';
const http = require('node:http');
const port = Number(process.argv[2] || 8081);
http.createServer((req, res) => {
  const ak = Object.entries(req.headers)
    .filter(([k]) => k.startsWith('x-authentik-') && k !== 'x-authentik-jwt')
    .map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(String(v))}</td></tr>`).join('');
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!doctype html><meta charset="utf-8"><title>ak-outpost demo</title>
<h1>Hello, ${esc(String(req.headers['x-authentik-name'] || 'stranger'))}</h1>
<p>You asked for <code>${esc(req.url)}</code>. nginx sent these identity headers:</p>
<table border="1" cellpadding="4">${ak}</table>
<p><a href="/outpost.goauthentik.io/sign_out">Sign out</a></p>`);
}).listen(port, '127.0.0.1', () => console.log(`demo app on 127.0.0.1:${port}`));
function esc(s) {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}
