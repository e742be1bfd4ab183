// A real OpenID provider for GhostCrate's tests: oidc-provider on 127.0.0.1.
//
//   node provider.mjs PORT ACCOUNTS.json
//
// Clients register themselves through the provider's own dynamic registration
// endpoint (/reg). The dev login form accepts any login and password; accounts named in
// ACCOUNTS.json ({"alice": {"email": ..., "groups": [...]}}) get those claims as well.
// `POST /__test/tamper?mode=MODE` changes the next ID token the token endpoint answers,
// so that the tests can show the relying party refuses it: `forged` (signed with another
// key under the same kid), `unknown-key` (another key and kid), `wrong-aud`, `expired` or
// `wrong-nonce` (signed with the real key).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import { SignJWT, decodeJwt, exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

const [port, accountsFile] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const accounts = JSON.parse(readFileSync(accountsFile, 'utf8'));
const KID = 'test-key';

async function signingKey() {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return privateKey;
}

const realKey = await signingKey();
const forgerKey = await signingKey();
const realJwk = { ...(await exportJWK(realKey)), kid: KID, alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  jwks: { keys: [realJwk] },
  cookies: { keys: ['ghostcrate-test-cookie-key'] },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
  },
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // Claims of the requested scopes go into the ID token, as Entra ID and Google do.
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    const extra = accounts[id] || {};
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, ...extra };
      },
    };
  },
});

let tamper = null;

async function tampered(idToken, mode) {
  const claims = decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  if (mode === 'wrong-aud') claims.aud = 'someone-else';
  if (mode === 'expired') Object.assign(claims, { iat: now - 7200, exp: now - 3600 });
  if (mode === 'wrong-nonce') claims.nonce = 'not-the-nonce-that-was-sent';
  const forged = mode === 'forged' || mode === 'unknown-key';
  const kid = mode === 'unknown-key' ? 'another-key' : KID;
  return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid }).sign(forged ? forgerKey : realKey);
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/__test/tamper' && ctx.method === 'POST') {
    tamper = ctx.query.mode;
    ctx.body = { tamper };
    return;
  }
  await next();
  if (ctx.path === '/token' && ctx.status === 200 && tamper && ctx.body && ctx.body.id_token) {
    ctx.body = { ...ctx.body, id_token: await tampered(ctx.body.id_token, tamper) };
    tamper = null;
  }
});

createServer(provider.callback()).listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
