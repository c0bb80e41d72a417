// Reference OpenID Connect provider for the ak-outpost test suite and demo.
//
//   node tests/idp/server.js <config.json>
//
// Prints `IDP_READY http://127.0.0.1:<port>` on stdout once it accepts
// requests. Everything else (errors, warnings) goes to stderr. See README.md.

import { generateKeyPairSync, randomBytes, createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

const HOST = '127.0.0.1';

// stdout carries exactly one line (IDP_READY ...): oidc-provider prints its
// notices with console.info, so send console.log/info to stderr, and drop two
// known-harmless warnings (Node 20 runtime; the body this server pre-reads
// when it rewrites client authentication, see normalizeClientAuth).
const toStderr = (...args) => console.error(...args);
console.log = toStderr;
console.info = toStderr;
const originalWarn = console.warn.bind(console);
console.warn = (...args) => {
  const text = String(args[0] ?? '');
  if (text.includes('Unsupported runtime') || text.includes('already parsed request body')) return;
  originalWarn(...args);
};

// imported only now, so that the console redirection above is in place
const { default: Provider } = await import('oidc-provider');

// ---------------------------------------------------------------------------
// configuration

function fail(message) {
  process.stderr.write(`idp: ${message}\n`);
  process.exit(2);
}

function loadConfig(file) {
  if (!file) fail('usage: node server.js <config.json>');
  let cfg;
  try {
    cfg = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    fail(`cannot read config ${file}: ${err.message}`);
  }
  if (!Array.isArray(cfg.clients) || cfg.clients.length === 0) fail('config: "clients" must be a non-empty array');
  if (!Array.isArray(cfg.users) || cfg.users.length === 0) fail('config: "users" must be a non-empty array');
  for (const c of cfg.clients) {
    if (!c.client_id || !c.client_secret) fail('config: every client needs client_id and client_secret');
    if (!Array.isArray(c.redirect_uris) || c.redirect_uris.length === 0) fail(`config: client ${c.client_id} needs redirect_uris`);
  }
  for (const u of cfg.users) {
    if (!u.username || typeof u.password !== 'string') fail('config: every user needs username and password');
  }
  const num = (key, dflt) => {
    if (cfg[key] === undefined || cfg[key] === null) return dflt;
    const n = Number(cfg[key]);
    if (!Number.isInteger(n) || n < 0) fail(`config: ${key} must be a non-negative integer`);
    return n;
  };
  return {
    port: num('port', 0),
    accessTokenTTL: num('access_token_ttl', 3600),
    idTokenTTL: num('id_token_ttl', 3600),
    refreshTokenTTL: num('refresh_token_ttl', 86400),
    strictClientAuth: cfg.strict_client_auth === true,
    clients: cfg.clients.map((c) => ({
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
      post_logout_redirect_uris: [],
      ...c,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    })),
    users: new Map(cfg.users.map((u) => [u.username, u])),
  };
}

const config = loadConfig(process.argv[2]);

// ---------------------------------------------------------------------------
// in-memory adapter: one Map per model, enumerable by the test endpoints

const stores = new Map(); // model name -> Map(id -> { payload, expiresAt })

function storeFor(model) {
  let s = stores.get(model);
  if (!s) {
    s = new Map();
    stores.set(model, s);
  }
  return s;
}

function nowMs() {
  return Date.now();
}

function liveEntry(store, id) {
  const entry = store.get(id);
  if (!entry) return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= nowMs()) {
    store.delete(id);
    return undefined;
  }
  return entry;
}

class MapAdapter {
  constructor(model) {
    this.model = model;
    this.store = storeFor(model);
  }

  async upsert(id, payload, expiresIn) {
    this.store.set(id, {
      payload: structuredClone(payload),
      expiresAt: typeof expiresIn === 'number' ? nowMs() + expiresIn * 1000 : undefined,
    });
  }

  async find(id) {
    const entry = liveEntry(this.store, id);
    return entry ? structuredClone(entry.payload) : undefined;
  }

  async findByUid(uid) {
    for (const [id, entry] of this.store) {
      if (entry.payload.uid === uid) return this.find(id);
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [id, entry] of this.store) {
      if (entry.payload.userCode === userCode) return this.find(id);
    }
    return undefined;
  }

  async consume(id) {
    const entry = liveEntry(this.store, id);
    if (entry) entry.payload.consumed = Math.floor(nowMs() / 1000);
  }

  async destroy(id) {
    this.store.delete(id);
  }

  async revokeByGrantId(grantId) {
    for (const [id, entry] of this.store) {
      if (entry.payload.grantId === grantId) this.store.delete(id);
    }
  }
}

// drop expired records now and then so long demo runs do not grow forever
setInterval(() => {
  for (const store of stores.values()) {
    for (const id of store.keys()) liveEntry(store, id);
  }
}, 60_000).unref();

// ---------------------------------------------------------------------------
// keys

function signingKeys() {
  const kid = (jwk) => createHash('sha256').update(JSON.stringify(jwk)).digest('base64url').slice(0, 16);
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return [
    { ...rsa, kid: `rs256-${kid({ n: rsa.n })}`, alg: 'RS256', use: 'sig' },
    { ...ec, kid: `es256-${kid({ x: ec.x, y: ec.y })}`, alg: 'ES256', use: 'sig' },
  ];
}

// ---------------------------------------------------------------------------
// html

function esc(value) {
  return String(value ?? '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${esc(title)}</title>
<style>body{font-family:sans-serif;max-width:24em;margin:3em auto}label,input,button{display:block;margin:.4em 0}.error{color:#b00}</style>
</head>
<body>
${body}
</body>
</html>
`;
}

function loginPage(uid, { username = '', error } = {}) {
  return page('Sign in', `<h1>Sign in</h1>
${error ? `<p class="error" id="login-error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login" id="login-form">
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" value="${esc(username)}" required>
<label for="password">Password</label>
<input id="password" type="password" name="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>`);
}

// ---------------------------------------------------------------------------
// provider configuration

function findUser(sub) {
  return config.users.get(sub);
}

const providerConfiguration = {
  adapter: MapAdapter,
  clients: config.clients,
  jwks: { keys: signingKeys() },
  cookies: {
    keys: [randomBytes(32).toString('base64url'), randomBytes(32).toString('base64url')],
    // plain http on 127.0.0.1: never mark cookies secure (oidc-provider only
    // does so by itself when the request came in over https)
    long: { httpOnly: true, sameSite: 'lax', secure: false },
    short: { httpOnly: true, sameSite: 'lax', secure: false },
  },
  scopes: ['openid', 'profile', 'email', 'groups', 'offline_access'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // put scope-derived claims into the ID token too, not only into userinfo
  conformIdTokenClaims: false,
  async findAccount(ctx, sub) {
    const user = findUser(sub);
    if (!user) return undefined;
    return {
      accountId: user.username,
      async claims() {
        return {
          sub: user.username,
          preferred_username: user.username,
          name: user.name ?? user.username,
          email: user.email,
          email_verified: user.email_verified ?? true,
          groups: Array.isArray(user.groups) ? [...user.groups] : [],
        };
      },
    };
  },
  pkce: {
    // accepted (S256) when sent, never demanded
    required: () => false,
  },
  // every authorization_code grant gets a refresh token, offline_access or not
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  ttl: {
    AccessToken: config.accessTokenTTL,
    AuthorizationCode: 60,
    IdToken: config.idTokenTTL,
    RefreshToken: config.refreshTokenTTL,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
  },
  // browsers never call the backchannel endpoints in our setups; allow any origin
  clientBasedCORS: () => true,
  enabledJWA: {
    idTokenSigningAlgValues: ['RS256', 'ES256', 'HS256'],
  },
  features: {
    devInteractions: { enabled: false },
    introspection: {
      enabled: true,
      // any authenticated confidential client may introspect any token
      allowedPolicy: async (ctx, client, token) => client.clientAuthMethod !== 'none' || token.clientId === client.clientId,
    },
    revocation: {
      enabled: true,
      // a client may only revoke its own tokens
      allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
    },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx) {
        const action = ctx.oidc.urlFor('end_session_confirm');
        const { secret } = ctx.oidc.session.state;
        ctx.type = 'html';
        ctx.body = page('Sign out', `<h1>Sign out?</h1>
<form method="post" action="${esc(action)}" id="logout-form">
<input type="hidden" name="xsrf" value="${esc(secret)}">
<button type="submit" name="logout" value="yes">Yes, sign me out</button>
</form>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = page('Signed out', '<h1>Signed out</h1>\n<p>Signed out. You can close this page.</p>');
      },
    },
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<h1>Error</h1>
<p id="error">${esc(out.error)}</p>
<p id="error-description">${esc(out.error_description)}</p>`);
  },
};

// ---------------------------------------------------------------------------
// request plumbing

const stats = {
  requests: {},
  introspectionInFlight: 0,
  introspectionMaxInFlight: 0,
};
let introspectionDelayMs = 0;

function resetStats() {
  stats.requests = {};
  stats.introspectionMaxInFlight = stats.introspectionInFlight;
}

function sendJson(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(data),
    'Cache-Control': 'no-store',
  });
  res.end(data);
}

function sendHtml(res, status, html) {
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Length': Buffer.byteLength(html),
    'Cache-Control': 'no-store',
  });
  res.end(html);
}

async function readBody(req, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

// Records of one account, with a liveness check mirroring what introspection
// would answer.
function accountRecords(model, sub) {
  const out = [];
  for (const [id, entry] of storeFor(model)) {
    if (entry.payload.accountId === sub) out.push([id, entry]);
  }
  return out;
}

function isLiveToken(entry) {
  const p = entry.payload;
  if (entry.expiresAt !== undefined && entry.expiresAt <= nowMs()) return false;
  if (p.exp !== undefined && p.exp * 1000 <= nowMs()) return false;
  if (p.consumed) return false;
  if (p.grantId && !liveEntry(storeFor('Grant'), p.grantId)) return false;
  if (p.expiresWithSession) {
    let found = false;
    for (const s of storeFor('Session').values()) {
      if (s.payload.uid === p.sessionUid && (s.expiresAt === undefined || s.expiresAt > nowMs())) {
        found = true;
        break;
      }
    }
    if (!found) return false;
  }
  return true;
}

async function handleTest(req, res, url) {
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'POST /__test/revoke': {
      const sub = url.searchParams.get('sub');
      if (!sub) return sendJson(res, 400, { error: 'sub is required' });
      let revoked = 0;
      for (const model of ['AccessToken', 'RefreshToken', 'AuthorizationCode', 'Grant', 'Session']) {
        const store = storeFor(model);
        for (const [id] of accountRecords(model, sub)) {
          store.delete(id);
          revoked += 1;
        }
      }
      return sendJson(res, 200, { revoked });
    }
    case 'GET /__test/stats': {
      const r = stats.requests;
      return sendJson(res, 200, {
        requests: r,
        introspection_max_in_flight: stats.introspectionMaxInFlight,
        token_requests: r['/token'] ?? 0,
        introspection_requests: r['/token/introspection'] ?? 0,
        revocation_requests: r['/token/revocation'] ?? 0,
      });
    }
    case 'POST /__test/stats/reset':
      resetStats();
      return sendJson(res, 200, { reset: true });
    case 'GET /__test/tokens': {
      const sub = url.searchParams.get('sub');
      if (!sub) return sendJson(res, 400, { error: 'sub is required' });
      const count = (model) => accountRecords(model, sub).filter(([, e]) => isLiveToken(e)).length;
      return sendJson(res, 200, { access_tokens: count('AccessToken'), refresh_tokens: count('RefreshToken') });
    }
    case 'POST /__test/fault': {
      // Breaks every provider endpoint (not /__test/) until mode=none:
      //   status (answer `status`, default 503), garbage (200 with a body that is not JSON),
      //   reset (close the connection without an answer).
      const mode = url.searchParams.get('mode') ?? 'none';
      if (!['none', 'status', 'garbage', 'reset'].includes(mode)) return sendJson(res, 400, { error: 'unknown mode' });
      const status = Number(url.searchParams.get('status') ?? 503);
      fault = mode === 'none' ? null : { mode, status };
      return sendJson(res, 200, { fault: mode });
    }
    case 'POST /__test/outage': {
      // Stops listening (connections refused) for `ms` milliseconds, then listens again on
      // the same port, with every token and key as before.
      const ms = Number(url.searchParams.get('ms') ?? 0);
      if (!Number.isFinite(ms) || ms <= 0) return sendJson(res, 400, { error: 'ms must be positive' });
      res.once('finish', () => {
        const port = server.address().port;
        server.close();
        server.closeAllConnections();
        setTimeout(() => server.listen(port, HOST), ms);
      });
      return sendJson(res, 200, { outage_ms: ms });
    }
    case 'POST /__test/delay': {
      const ms = Number(url.searchParams.get('ms') ?? 0);
      if (!Number.isFinite(ms) || ms < 0) return sendJson(res, 400, { error: 'ms must be a non-negative number' });
      introspectionDelayMs = ms;
      return sendJson(res, 200, { delay_ms: ms });
    }
    default:
      return sendJson(res, 404, { error: 'unknown test endpoint' });
  }
}

async function grantConsent(provider, details) {
  const { prompt: { details: missing }, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const savedId = await grant.save();
  return grantId ? {} : { grantId: savedId };
}

async function handleInteraction(provider, req, res, url) {
  const m = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?\/?$/);
  if (!m) return sendHtml(res, 404, page('Not found', '<h1>Not found</h1>'));
  const [, uid, login] = m;
  try {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) {
      return sendHtml(res, 400, page('Error', '<h1>Error</h1><p>interaction mismatch</p>'));
    }
    const prompt = details.prompt.name;

    if (!login && req.method === 'GET') {
      if (prompt === 'login') {
        return sendHtml(res, 200, loginPage(uid, { username: details.params.login_hint }));
      }
      if (prompt === 'consent') {
        const consent = await grantConsent(provider, details);
        return provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
      }
      return sendHtml(res, 400, page('Error', `<h1>Error</h1><p>unsupported prompt ${esc(prompt)}</p>`));
    }

    if (login && req.method === 'POST') {
      if (prompt !== 'login') {
        return sendHtml(res, 400, page('Error', '<h1>Error</h1><p>no login pending</p>'));
      }
      const form = new URLSearchParams(await readBody(req));
      const username = form.get('username') ?? '';
      const password = form.get('password') ?? '';
      const user = findUser(username);
      if (!user || user.password !== password) {
        return sendHtml(res, 401, loginPage(uid, { username, error: 'Invalid username or password' }));
      }
      return provider.interactionFinished(
        req,
        res,
        { login: { accountId: user.username } },
        { mergeWithLastSubmission: false },
      );
    }

    res.setHeader('Allow', login ? 'POST' : 'GET');
    return sendHtml(res, 405, page('Error', '<h1>Method not allowed</h1>'));
  } catch (err) {
    const known = err?.name === 'SessionNotFound' || err?.statusCode === 400;
    if (!known) process.stderr.write(`idp: interaction error: ${err?.stack ?? err}\n`);
    return sendHtml(res, known ? 400 : 500, page('Error', `<h1>Error</h1><p>${esc(err?.error_description ?? err?.message ?? 'error')}</p>`));
  }
}

// Unless strict_client_auth is set, let a client authenticate at the token,
// introspection and revocation endpoints with either client_secret_basic or
// client_secret_post, whatever it is registered with: the request is
// rewritten to the registered method before oidc-provider sees it.
const CLIENT_AUTH_PATHS = new Set(['/token', '/token/introspection', '/token/revocation']);
const clientsById = new Map(config.clients.map((c) => [c.client_id, c]));
const anyBasicClient = config.clients.some((c) => c.token_endpoint_auth_method === 'client_secret_basic');

function formDecode(s) {
  return decodeURIComponent(s.replace(/\+/g, '%20'));
}

function parseBasic(header) {
  const m = /^Basic\s+(.+)$/i.exec(header ?? '');
  if (!m) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i === -1) return undefined;
  try {
    return { id: formDecode(decoded.slice(0, i)), secret: formDecode(decoded.slice(i + 1)) };
  } catch {
    return undefined;
  }
}

async function normalizeClientAuth(req, url) {
  if (config.strictClientAuth || req.method !== 'POST' || !CLIENT_AUTH_PATHS.has(url.pathname)) return;
  if (!/^application\/x-www-form-urlencoded/i.test(req.headers['content-type'] ?? '')) return;
  const basic = parseBasic(req.headers.authorization);
  const basicToPost = basic && clientsById.get(basic.id)?.token_endpoint_auth_method === 'client_secret_post';
  if (!basicToPost && (basic || req.headers.authorization || !anyBasicClient)) return;

  const form = new URLSearchParams(await readBody(req));
  if (basicToPost) {
    delete req.headers.authorization;
    form.set('client_id', basic.id);
    form.set('client_secret', basic.secret);
  } else {
    const id = form.get('client_id');
    const secret = form.get('client_secret');
    if (id && secret && clientsById.get(id)?.token_endpoint_auth_method === 'client_secret_basic') {
      form.delete('client_id');
      form.delete('client_secret');
      const enc = (s) => encodeURIComponent(s);
      req.headers.authorization = `Basic ${Buffer.from(`${enc(id)}:${enc(secret)}`).toString('base64')}`;
    }
  }
  // the stream is consumed now; oidc-provider falls back to req.body
  req.body = form.toString();
  req.headers['content-length'] = String(Buffer.byteLength(req.body));
}

// ---------------------------------------------------------------------------
// server

let provider;
let providerCallback;
// A fault injected through /__test/fault (null: none).
let fault = null;

const server = http.createServer(async (req, res) => {
  let url;
  try {
    url = new URL(req.url, 'http://127.0.0.1');
  } catch {
    return sendJson(res, 400, { error: 'bad request' });
  }

  try {
    if (url.pathname.startsWith('/__test/')) return await handleTest(req, res, url);

    if (!providerCallback) return sendJson(res, 503, { error: 'starting' });

    const statsKey = url.pathname.replace(/^\/(interaction|auth)\/[^/]+/, '/$1/:uid');
    stats.requests[statsKey] = (stats.requests[statsKey] ?? 0) + 1;

    if (fault) {
      if (fault.mode === 'reset') return req.socket.destroy();
      if (fault.mode === 'garbage') {
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end('<html>upstream error</html>');
      }
      return sendJson(res, fault.status, { error: 'server_error' });
    }

    if (url.pathname.startsWith('/interaction/')) return await handleInteraction(provider, req, res, url);

    if (url.pathname === '/token/introspection') {
      stats.introspectionInFlight += 1;
      stats.introspectionMaxInFlight = Math.max(stats.introspectionMaxInFlight, stats.introspectionInFlight);
      let done = false;
      const finish = () => {
        if (!done) {
          done = true;
          stats.introspectionInFlight -= 1;
        }
      };
      res.once('finish', finish);
      res.once('close', finish);
      if (introspectionDelayMs > 0) await sleep(introspectionDelayMs);
    }

    await normalizeClientAuth(req, url);
    return providerCallback(req, res);
  } catch (err) {
    process.stderr.write(`idp: request error: ${err?.stack ?? err}\n`);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
    else res.destroy();
  }
});

server.on('clientError', (err, socket) => {
  if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
});

function shutdown(signal) {
  process.stderr.write(`idp: ${signal}, shutting down\n`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

server.on('error', (err) => fail(`cannot listen on ${HOST}:${config.port}: ${err.message}`));

server.listen(config.port, HOST, () => {
  const issuer = `http://${HOST}:${server.address().port}`;
  try {
    provider = new Provider(issuer, providerConfiguration);
  } catch (err) {
    fail(`invalid provider configuration: ${err?.stack ?? err}`);
  }
  for (const event of [
    'server_error', 'authorization.error', 'grant.error', 'introspection.error', 'revocation.error',
    'userinfo.error', 'end_session.error', 'discovery.error', 'jwks.error',
  ]) {
    provider.on(event, (ctx, err) => {
      const e = err ?? ctx;
      process.stderr.write(`idp: ${event}: ${e?.error ?? e?.name ?? ''} ${e?.error_description ?? e?.message ?? ''}\n`);
      if (event === 'server_error' && e?.stack) process.stderr.write(`${e.stack}\n`);
    });
  }
  providerCallback = provider.callback();
  process.stdout.write(`IDP_READY ${issuer}\n`);
});
