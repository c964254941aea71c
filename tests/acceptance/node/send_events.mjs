// Sends one shopper's identify, track and page through @segment/analytics-node to winback.
// Usage: WINBACK_URL=http://127.0.0.1:PORT WINBACK_WRITE_KEY=wk_... node send_events.mjs
// Prints {"messageIds": [...], "version": "..."} on success; exits 1 on any delivery error.
import { Analytics } from '@segment/analytics-node'

const analytics = new Analytics({
  writeKey: process.env.WINBACK_WRITE_KEY,
  host: process.env.WINBACK_URL,
  maxRetries: 1,
  flushInterval: 60_000, // only closeAndFlush() sends: one batch for the three calls
})

const errors = []
analytics.on('error', (error) => errors.push(String(error?.reason ?? error?.message ?? error)))

const messageIds = []
const delivered = (error, ctx) => {
  if (error) errors.push(String(error?.reason ?? error))
  else messageIds.push(ctx.event.messageId)
}

analytics.identify(
  { userId: 'user-42', anonymousId: 'anon-7', traits: { email: 'ada@example.com', firstName: 'Ada' } },
  delivered,
)
analytics.track(
  {
    userId: 'user-42',
    event: 'Product Viewed',
    properties: { product_id: 'sku-1', name: 'Linen shirt', price: 49.5, currency: 'EUR' },
  },
  delivered,
)
analytics.page(
  { userId: 'user-42', category: 'Shop', name: 'Product', properties: { url: 'https://shop.example/p/sku-1' } },
  delivered,
)

await analytics.closeAndFlush({ timeout: 10_000 })

if (errors.length > 0 || messageIds.length !== 3) {
  console.error(JSON.stringify({ errors, messageIds }))
  process.exit(1)
}
console.log(JSON.stringify({ messageIds, version: analytics.VERSION }))
