// DPoP interop with panva's `dpop` and `jose` packages, driven by tests/dpop_interop.rs.
//
//   node dpop.mjs make <htu> <htm> <access token> <nonce>
//     prints one JSON line per proof made by `dpop` (ES256, Ed25519, RS256, PS256) and by
//     `jose` (ES384, EdDSA): {"maker", "alg", "proof", "jkt"}, where `jkt` is the key's
//     RFC 7638 thumbprint as `jose` computes it.
//
//   node dpop.mjs verify
//     reads JSON lines {"proof", "htu", "htm", "accessToken", "nonce"} from stdin and checks
//     each proof with `jose` (signature under the embedded public JWK, `typ`, claims, `ath`);
//     prints one JSON line per proof: {"ok": true, "jkt"} or {"ok": false, "error"}.
import { createHash, randomUUID } from 'node:crypto'
import { createInterface } from 'node:readline'

import * as dpop from 'dpop'
import * as jose from 'jose'

const [mode, ...args] = process.argv.slice(2)

const ath = (token) => createHash('sha256').update(token, 'ascii').digest('base64url')

async function make(htu, htm, accessToken, nonce) {
  for (const alg of ['ES256', 'Ed25519', 'RS256', 'PS256']) {
    const keypair = await dpop.generateKeyPair(alg, { extractable: true })
    const proof = await dpop.generateProof(keypair, htu, htm, nonce, accessToken)
    const jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(keypair.publicKey))
    console.log(JSON.stringify({ maker: 'dpop', alg, proof, jkt }))
  }
  for (const alg of ['ES384', 'EdDSA']) {
    const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true })
    const jwk = await jose.exportJWK(publicKey)
    const proof = await new jose.SignJWT({ htm, htu, nonce, ath: ath(accessToken) })
      .setProtectedHeader({ typ: 'dpop+jwt', alg, jwk })
      .setIssuedAt()
      .setJti(randomUUID())
      .sign(privateKey)
    console.log(JSON.stringify({ maker: 'jose', alg, proof, jkt: await jose.calculateJwkThumbprint(jwk) }))
  }
}

async function verifyOne({ proof, htu, htm, accessToken, nonce }) {
  const { payload, protectedHeader } = await jose.jwtVerify(proof, jose.EmbeddedJWK, {
    typ: 'dpop+jwt',
    algorithms: ['ES256', 'ES384', 'EdDSA', 'Ed25519', 'RS256', 'PS256'],
    maxTokenAge: '60s',
    requiredClaims: ['jti', 'htm', 'htu', 'iat'],
  })
  const jwk = protectedHeader.jwk
  for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) {
    if (member in jwk) throw new Error(`private member ${member} in jwk`)
  }
  if (payload.htm !== htm) throw new Error(`htm ${payload.htm}`)
  if (payload.htu !== htu) throw new Error(`htu ${payload.htu}`)
  if (accessToken !== undefined && payload.ath !== ath(accessToken)) throw new Error('ath')
  if (nonce !== undefined && payload.nonce !== nonce) throw new Error('nonce')
  if (typeof payload.jti !== 'string' || payload.jti.length < 16) throw new Error('jti')
  return jose.calculateJwkThumbprint(jwk)
}

async function verify() {
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() === '') continue
    try {
      console.log(JSON.stringify({ ok: true, jkt: await verifyOne(JSON.parse(line)) }))
    } catch (e) {
      console.log(JSON.stringify({ ok: false, error: String(e) }))
    }
  }
}

if (mode === 'make') await make(...args)
else if (mode === 'verify') await verify()
else {
  console.error('usage: node dpop.mjs make <htu> <htm> <access token> <nonce> | verify')
  process.exit(2)
}
