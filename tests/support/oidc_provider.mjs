// A test OpenID provider on loopback, built on panva's oidc-provider (a certified OpenID provider library).
//
// Usage: node oidc_provider.mjs SPEC.json. The spec names the confidential clients (id, secret, redirect
// URIs) and the accounts (id -> claims such as email and groups). The provider listens on a free loopback
// port (issuer http://localhost:<port>), signs with a fresh RS256 key, and prints one JSON line {"issuer": ...} once it listens.
//
// `tamper` (account id -> claims) makes the token endpoint hand out, for that account, the library's ID
// token with those claims replaced and signed again with the provider's own key: what a client receives when
// a token meant for another client is substituted (the library itself never mints one). Tests of the
// client's refusals use it; no other account is touched.
//
// Sign-in goes through the library's development interactions (a login form that takes any password for a
// known account id, then a consent form): acceptable for a test provider only, never in production.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import * as jose from 'jose';
import Provider from 'oidc-provider';

const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signing = { ...(await jose.exportJWK(privateKey)), kid: 'lab-rs256', alg: 'RS256', use: 'sig' };

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  // Named `localhost` while the broker is reached as 127.0.0.1: two sites, as a real provider and broker are.
  const issuer = `http://localhost:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: spec.clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      redirect_uris: c.redirect_uris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    jwks: { keys: [signing] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    scopes: ['openid', 'email', 'groups'],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
    // Claims asked for by scope go into the ID token (as Keycloak, Okta and Google put email there).
    conformIdTokenClaims: false,
    // PKCE for every client, confidential ones included (the library requires it for public ones only).
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
    async findAccount(_ctx, id) {
      const claims = spec.accounts[id];
      if (claims === undefined) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
    },
  });
  provider.use(async (ctx, next) => {
    await next();
    const idToken = ctx.path === '/token' && ctx.status === 200 ? ctx.body?.id_token : undefined;
    const claims = idToken ? jose.decodeJwt(idToken) : undefined;
    const changes = claims ? spec.tamper?.[claims.sub] : undefined;
    if (changes) {
      ctx.body = {
        ...ctx.body,
        id_token: await new jose.SignJWT({ ...claims, ...changes })
          .setProtectedHeader({ alg: 'RS256', kid: signing.kid })
          .sign(privateKey),
      };
    }
  });
  provider.on('server_error', (_ctx, err) => process.stderr.write(`server_error: ${err}\n`));
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});
