export default async function globalTeardown() {
  await globalThis.__INBOX_TEST_POSTGRES__?.stop();
}
