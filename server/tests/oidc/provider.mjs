// A real OpenID provider for the operator CLI's tests: panva/oidc-provider with
// - the public native client `attestation-cli` (PKCE, loopback redirect on any port,
//   refresh tokens, the device-authorization grant, and the password grant);
// - JWT access tokens for the resource `urn:attestation:api` with audience `attestation`,
//   signed ES384, carrying `preferred_username` and `realm_access.roles` as Keycloak does;
// - three accounts: alice and bob (operator), carol (viewer);
// - a login page that checks the password, and first-party consent granted automatically.
//
// Environment: PORT (required), ACCESS_TOKEN_TTL seconds (default 300).
// Prints `listening <issuer>` on stdout once it accepts connections. Listens on 127.0.0.1 only.

import crypto from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const port = Number(process.env.PORT);
if (!port) {
  console.error('provider.mjs: set PORT');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const accessTokenTtl = Number(process.env.ACCESS_TOKEN_TTL || 300);
const RESOURCE = 'urn:attestation:api';
const AUDIENCE = 'attestation';

const ACCOUNTS = {
  alice: { password: 'alice-password', roles: ['operator'], email: 'alice@example.test' },
  bob: { password: 'bob-password', roles: ['operator'], email: 'bob@example.test' },
  carol: { password: 'carol-password', roles: ['viewer'], email: 'carol@example.test' },
};

function jwk(type, options, alg) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: `${alg.toLowerCase()}-${crypto.randomUUID()}` };
}

function account(id) {
  const a = ACCOUNTS[id];
  if (!a) return undefined;
  return {
    accountId: id,
    async claims() {
      return { sub: id, preferred_username: id, email: a.email, realm_access: { roles: a.roles } };
    },
  };
}

const configuration = {
  clients: [
    {
      client_id: 'attestation-cli',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      redirect_uris: ['http://127.0.0.1/callback'],
      response_types: ['code'],
      grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code', 'password'],
    },
  ],
  jwks: { keys: [jwk('ec', { namedCurve: 'P-384' }, 'ES384'), jwk('rsa', { modulusLength: 2048 }, 'RS256')] },
  findAccount: (_ctx, id) => account(id),
  claims: { openid: ['sub'], profile: ['preferred_username'], email: ['email'] },
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator !== RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: 'operator',
          audience: AUDIENCE,
          accessTokenTTL: accessTokenTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES384' } },
        };
      },
    },
  },
  extraTokenClaims: async (_ctx, token) => {
    const a = ACCOUNTS[token.accountId];
    return a ? { preferred_username: token.accountId, realm_access: { roles: a.roles } } : undefined;
  },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  ttl: { AccessToken: accessTokenTtl, RefreshToken: 3600, Session: 3600, Interaction: 600, Grant: 3600, DeviceCode: 600 },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError: async (ctx, out) => {
    ctx.type = 'text/plain';
    ctx.body = `error: ${out.error}: ${out.error_description || ''}\n`;
  },
};

const provider = new Provider(issuer, configuration);

async function form(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 16384) throw new Error('form too large');
  }
  return Object.fromEntries(new URLSearchParams(body));
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid, message) {
  return `<!doctype html><title>Sign in</title>
<h1>Sign in to attestation</h1>${message ? `<p class="error">${esc(message)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
<input name="login" autocomplete="username"> <input name="password" type="password">
<button type="submit">Sign in</button></form>`;
}

// Grants everything the first-party CLI asked for.
async function consent(details) {
  const { prompt, params, session } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return { consent: { grantId: await grant.save() } };
}

provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  ctx.set('cache-control', 'no-store');
  if (m[2] && ctx.method === 'POST') {
    const { login, password } = await form(ctx.req);
    const a = ACCOUNTS[login];
    const ok = a && crypto.timingSafeEqual(
      crypto.createHash('sha256').update(String(password)).digest(),
      crypto.createHash('sha256').update(a.password).digest(),
    );
    if (!ok) {
      ctx.status = 401;
      ctx.type = 'html';
      ctx.body = loginPage(details.uid, 'wrong user name or password');
      return undefined;
    }
    const to = await provider.interactionResult(ctx.req, ctx.res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(to);
    return undefined;
  }
  if (details.prompt.name === 'login') {
    ctx.type = 'html';
    ctx.body = loginPage(details.uid);
    return undefined;
  }
  const to = await provider.interactionResult(ctx.req, ctx.res, await consent(details), { mergeWithLastSubmission: true });
  ctx.status = 303;
  ctx.redirect(to);
  return undefined;
});

// The resource-owner password grant, for `attestation auth login --password` (explicit only).
const passwordGrant = async (ctx) => {
  const { username, password } = ctx.oidc.params;
  const a = ACCOUNTS[username];
  const ok = a && crypto.timingSafeEqual(
    crypto.createHash('sha256').update(String(password)).digest(),
    crypto.createHash('sha256').update(a.password).digest(),
  );
  if (!ok) throw new errors.InvalidGrant('wrong user name or password');
  const { client } = ctx.oidc;
  const grant = new provider.Grant({ accountId: username, clientId: client.clientId });
  grant.addOIDCScope('openid profile');
  grant.addResourceScope(RESOURCE, 'operator');
  const grantId = await grant.save();
  const resourceServer = new provider.ResourceServer(RESOURCE, await configuration.features.resourceIndicators.getResourceServerInfo(ctx, RESOURCE, client));
  const at = new provider.AccessToken({ accountId: username, client, grantId, gty: 'password', scope: 'operator', resourceServer });
  const accessToken = await at.save();
  const rt = new provider.RefreshToken({ accountId: username, client, grantId, gty: 'password', scope: 'openid profile operator', resource: RESOURCE, iiat: Math.floor(Date.now() / 1000) });
  const refreshToken = await rt.save();
  ctx.body = { access_token: accessToken, expires_in: at.expiration, token_type: 'Bearer', refresh_token: refreshToken, scope: 'operator' };
};
provider.registerGrantType('password', passwordGrant, new Set(['username', 'password', 'scope', 'resource']));

provider.listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
