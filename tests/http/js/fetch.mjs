// An independent IPFS HTTP client for tests/http/test_helia.py.
//
// usage: node fetch.mjs '{"gateway": URL, "fetch": ["ipfs://CID/path", ...], "car": ["CID", ...]}'
//
// "fetch": Helia's @helia/verified-fetch over a Helia node whose only block
// source is the trustless gateway at URL (blocks fetched as application/vnd.ipld.raw
// and verified against their CIDs by Helia). "car": GET URL/ipfs/CID?format=car,
// read back with @ipld/car's CarBlockIterator, every block hashed and compared
// with its CID here. Prints one JSON object on stdout.
import { createHash } from 'node:crypto'
import { createHeliaLight } from 'helia'
import { trustlessGatewayBlockBroker } from '@helia/trustless-gateway-client'
import { fallbackRouter } from '@helia/fallback-router'
import { createVerifiedFetch } from '@helia/verified-fetch'
import { CarBlockIterator } from '@ipld/car'
import { sha256 } from 'multiformats/hashes/sha2'
import { equals } from 'uint8arrays/equals'

const args = JSON.parse(process.argv[2])
const out = { fetch: [], car: [] }

// Helia consults routers that declare the 'fallback' capability only after the
// others, and with no other router its provider search never ends: so the
// fallback router's providers (our gateway) come through a plain router.
const gateways = fallbackRouter({ gateways: [args.gateway], shuffle: false })
const router = {
  name: 'dscluster-gateway',
  findProviders: (cid, options) => gateways.findProviders(cid, options),
  toString: () => `dscluster-gateway(${args.gateway})`
}
const helia = createHeliaLight({
  blockBrokers: [trustlessGatewayBlockBroker({ allowInsecure: true, allowLocal: true })],
  routers: [router]
})
await helia.start()
const verifiedFetch = await createVerifiedFetch(helia)
try {
  for (const resource of args.fetch ?? []) {
    const signal = AbortSignal.timeout(60000)
    try {
      const resp = await verifiedFetch(resource, { signal })
      const body = Buffer.from(await resp.arrayBuffer())
      out.fetch.push({
        resource,
        status: resp.status,
        contentType: resp.headers.get('content-type'),
        length: body.length,
        sha256: createHash('sha256').update(body).digest('hex'),
        text: body.length < 4096 ? body.toString('utf8') : null
      })
    } catch (err) {
      out.fetch.push({ resource, error: String(err) })
    }
  }
  for (const cid of args.car ?? []) {
    const resp = await fetch(`${args.gateway}/ipfs/${cid}?format=car`, {
      headers: { accept: 'application/vnd.ipld.car' },
      signal: AbortSignal.timeout(60000)
    })
    const reader = await CarBlockIterator.fromIterable(resp.body)
    const blocks = []
    let verified = true
    for await (const { cid: blockCid, bytes } of reader) {
      if (blockCid.multihash.code === sha256.code) {
        const digest = await sha256.digest(bytes)
        verified = verified && equals(digest.bytes, blockCid.multihash.bytes)
      }
      blocks.push({ cid: blockCid.toString(), length: bytes.length })
    }
    out.car.push({
      cid,
      status: resp.status,
      contentType: resp.headers.get('content-type'),
      roots: (await reader.getRoots()).map(String),
      version: reader.version,
      blocks,
      verified
    })
  }
} finally {
  await helia.stop()
}
process.stdout.write(JSON.stringify(out) + '\n')
process.exit(0)
