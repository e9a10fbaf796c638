import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { INestApplication } from '@nestjs/common';
import { chromium, type Browser, type BrowserContext, type Page, type Request } from 'playwright-core';
import { InboxService } from 'nestjs-inbox';
import { bootstrap } from '../../sample/main';
import { waitFor } from '../support/test-app';
import { createTestDatabase, type TestDatabase } from '../support/test-database';

/** What the functions run inside the page touch (the specs compile without the DOM's types). */
interface BrowserGlobals {
  sessionStorage: { setItem(key: string, value: string): void };
  __xss?: number;
}

/** `UPDATE_SCREENSHOTS=1 npm run test:browser` refreshes the README's pictures of the console. */
const SCREENSHOTS = process.env.UPDATE_SCREENSHOTS === '1' ? join(__dirname, '..', '..', 'docs', 'screenshots') : null;

/** The sample bank with its console, driven in Chromium as an operator would. */
describe("operator's console in a browser", () => {
  let db: TestDatabase;
  let app: INestApplication;
  let base: string;
  let browser: Browser;
  const run = Date.now() % 100_000;
  let sequence = 0;

  beforeAll(async () => {
    db = await createTestDatabase('console');
    process.env.DATABASE_URL = db.url;
    process.env.PORT = '0';
    app = await bootstrap();
    base = `http://127.0.0.1:${(app.getHttpServer().address() as { port: number }).port}`;
    browser = await chromium.launch({ executablePath: process.env.INBOX_TEST_CHROMIUM, args: ['--no-sandbox'] });
    if (SCREENSHOTS) mkdirSync(SCREENSHOTS, { recursive: true });
  });

  afterAll(async () => {
    await browser?.close();
    await app?.close();
    delete process.env.PORT;
    await db?.drop();
  });

  /**
   * A page signed in with the sample's demo token; dialogs (the reason for an action) are answered.
   * `prepare` sets its browser context up before the page opens.
   */
  async function openConsole(path = '', token: string | null = 'demo', prepare?: (context: BrowserContext) => Promise<unknown>): Promise<{ page: Page; errors: string[] }> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    if (token) await context.addInitScript((value) => (globalThis as unknown as BrowserGlobals).sessionStorage.setItem('inbox-admin-token', value), token);
    await prepare?.(context);
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    page.on('dialog', (dialog) => void dialog.accept('from the browser test'));
    await page.goto(`${base}/inbox-admin/${path}`);
    return { page, errors };
  }

  /**
   * openConsole with the first request matching `pattern` held until `release()`: an answer that
   * comes late. `held` resolves with that request once the page has sent it.
   */
  async function openConsoleHolding(pattern: RegExp, path = ''): Promise<{ page: Page; errors: string[]; held: Promise<Request>; release: () => void }> {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let hold!: (request: Request) => void;
    const held = new Promise<Request>((resolve) => (hold = resolve));
    let first = true;
    const opened = await openConsole(path, 'demo', (context) =>
      context.route(pattern, async (route) => {
        if (first) {
          first = false;
          hold(route.request());
          await released;
        }
        await route.continue().catch(() => undefined); // the page may have cancelled it meanwhile
      }),
    );
    return { ...opened, held, release };
  }

  /** A new account, and a withdrawal from it that dead-letters (insufficient funds). */
  async function deadLetteredWithdrawal(name: string): Promise<{ account: string; opened: string; withdrawal: string }> {
    const account = `acc-${name}-${run}`;
    const opened = await send('bank.open-account', { accountId: account, owner: name });
    await settled(opened, 'completed');
    const withdrawal = await send('bank.withdraw', { accountId: account, amount: 900_000 });
    await settled(withdrawal, 'dead_letter');
    return { account, opened, withdrawal };
  }

  async function send(type: string, body: object): Promise<string> {
    const response = await fetch(`${base}/commands/${type}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': `browser-${run}-${++sequence}` },
      body: JSON.stringify(body),
    });
    const json = (await response.json()) as { id: string };
    if (response.status !== 202) throw new Error(`${type} answered ${response.status}: ${JSON.stringify(json)}`);
    return json.id;
  }

  async function settled(id: string, status: string): Promise<void> {
    await waitFor(async () => ((await (await fetch(`${base}/commands/${id}`)).json()) as { status: string }).status === status, `command ${id} ${status}`);
  }

  const tile = (page: Page, status: string) => page.locator(`.tile[data-status="${status}"] b`);

  it('filters the list (the filter in the URL), opens an entry, fixes its payload past a validation error and replays it', async () => {
    const { account, withdrawal } = await deadLetteredWithdrawal('fix');
    await settled(await send('bank.deposit', { accountId: account, amount: 500 }), 'completed');

    const { page, errors } = await openConsole();
    await page.locator('#filters select[name=status]').selectOption('dead_letter');
    await page.locator('#filters input[name=payload]').fill(`accountId=${account}`);
    await page.locator('#filters button[type=submit]').click();
    // The page puts the filter into its URL (history.pushState: no navigation to wait for).
    await waitFor(() => {
      const url = new URL(page.url());
      return url.searchParams.get('payload.accountId') === account && url.searchParams.get('status') === 'dead_letter';
    }, 'the URL to hold the filter');
    await expectRows(page, [withdrawal]);
    // The URL is the filter: opened afresh, it shows the same.
    const shared = page.url();
    const second = await openConsole(shared.slice(shared.indexOf('?')));
    await expectRows(second.page, [withdrawal]);
    await expect(second.page.locator('#filters input[name=payload]').inputValue()).resolves.toBe(`accountId=${account}`);

    await page.locator(`#entries tr[data-id="${withdrawal}"]`).click();
    await page.locator('#entry-payload').filter({ hasText: '900000' }).waitFor();
    await expect(page.locator('#timeline').textContent()).resolves.toContain('Insufficient funds');
    if (SCREENSHOTS) await page.screenshot({ path: join(SCREENSHOTS, 'console-entry.png'), fullPage: true });

    // The editor opens on demand.
    expect(await page.locator('#replay-form').isVisible()).toBe(false);
    await page.locator('#replay-open').click();
    await page.locator('#replay-payload').fill(JSON.stringify({ accountId: account, amount: 0 }));
    await page.locator('#replay-form button[type=submit]').click();
    await page.locator('#replay-errors li').filter({ hasText: 'amount must not be less than 1' }).waitFor();
    if (SCREENSHOTS) await page.screenshot({ path: join(SCREENSHOTS, 'console-replay-error.png'), fullPage: true });
    await settled(withdrawal, 'dead_letter');

    await page.locator('#replay-payload').fill(JSON.stringify({ accountId: account, amount: 500 }));
    await page.locator('#replay-reason').fill('customer asked for 500');
    await page.locator('#replay-form button[type=submit]').click();
    await page.locator('#notice').filter({ hasText: 'Replayed' }).waitFor();
    await settled(withdrawal, 'completed');
    await page.reload();
    await page.locator('[data-fact="status"]').filter({ hasText: 'completed' }).waitFor();
    await expect(page.locator('#timeline').textContent()).resolves.toContain('customer asked for 500');
    expect(errors).toEqual([]);
  });

  it('keeps a filter typed while the first list is still loading, and applies it', async () => {
    const { account, withdrawal } = await deadLetteredWithdrawal('early');
    // The page's first list request is held until the operator has typed: a slow first load.
    const { page, errors, held, release } = await openConsoleHolding(/\/api\/entries\?/);
    await held;
    await page.locator('#filters select[name=status]').selectOption('dead_letter');
    await page.locator('#filters input[name=payload]').fill(`accountId=${account}`);
    const loaded = page.waitForResponse(/\/api\/entries\?/);
    release();
    await loaded;
    await page.locator('#entries tbody tr').first().waitFor();
    // The first list arrived after the typing: the form still holds what was typed.
    await expect(page.locator('#filters select[name=status]').inputValue()).resolves.toBe('dead_letter');
    await expect(page.locator('#filters input[name=payload]').inputValue()).resolves.toBe(`accountId=${account}`);
    await page.locator('#filters button[type=submit]').click();
    await waitFor(() => new URL(page.url()).searchParams.get('payload.accountId') === account, 'the URL to hold the filter');
    await expectRows(page, [withdrawal]);
    expect(errors).toEqual([]);
    await page.context().close();
  });

  it('shows the list of the latest filter when an earlier list would answer after it', async () => {
    const { account, withdrawal } = await deadLetteredWithdrawal('late');
    // The page's first (unfiltered) list request is held: it would answer after the filtered one.
    const { page, errors, held, release } = await openConsoleHolding(/\/api\/entries\?/);
    const stale = await held;
    const cancelled = page.waitForEvent('requestfailed', { predicate: (request) => request === stale, timeout: 10_000 });
    await page.locator('#filters select[name=status]').selectOption('dead_letter');
    await page.locator('#filters input[name=payload]').fill(`accountId=${account}`);
    await page.locator('#filters button[type=submit]').click();
    // The newer list cancels the older request: its answer can never land over the filtered list.
    await cancelled;
    await expectRows(page, [withdrawal]);
    release();
    await expect(page.locator('#notice').isVisible()).resolves.toBe(false);
    expect(errors).toEqual([]);
    await page.context().close();
  });

  it('shows the entry opened last when an earlier one would answer after it', async () => {
    const { account, opened, withdrawal } = await deadLetteredWithdrawal('two');
    // The first entry's request is held: it would answer after the second one.
    const { page, errors, held, release } = await openConsoleHolding(new RegExp(`/api/entries/${opened}$`), `?payload.accountId=${account}&entry=${opened}`);
    const stale = await held;
    const cancelled = page.waitForEvent('requestfailed', { predicate: (request) => request === stale, timeout: 10_000 });
    await page.locator('#back').click();
    await page.locator(`#entries tr[data-id="${withdrawal}"]`).click();
    await cancelled;
    await page.locator('[data-fact="id"]').filter({ hasText: withdrawal }).waitFor();
    release();
    await expect(page.locator('#notice').isVisible()).resolves.toBe(false);
    expect(errors).toEqual([]);
    await page.context().close();
  });

  it('replays a group of dead letters after its dry run, and the counts change', async () => {
    const accounts = [`acc-g${run}-a`, `acc-g${run}-b`];
    const withdrawals: string[] = [];
    for (const accountId of accounts) {
      await settled(await send('bank.open-account', { accountId, owner: 'Group' }), 'completed');
      withdrawals.push(await send('bank.withdraw', { accountId, amount: 3000 }));
    }
    for (const id of withdrawals) await settled(id, 'dead_letter');
    for (const accountId of accounts) await settled(await send('bank.deposit', { accountId, amount: 5000 }), 'completed');

    const { page, errors } = await openConsole();
    const fingerprint = `Insufficient funds in acc-g<n>-a: balance <n>, withdrawal <n>.`;
    const row = page.locator(`#groups tr[data-fingerprint="${fingerprint}"]`);
    await row.waitFor();
    // Only the first account's shape: the second ends in -b, a group of its own.
    await expect(row.locator('.count').textContent()).resolves.toBe('1');
    const deadBefore = Number(await tile(page, 'dead_letter').textContent());

    const groupB = page.locator(`#groups tr[data-fingerprint="${fingerprint.replace('-a:', '-b:')}"]`);
    for (const group of [row, groupB]) {
      await group.getByRole('button', { name: 'Replay…' }).click();
      await group.locator('.confirm-text').filter({ hasText: 'Replay 1 entries?' }).waitFor();
      if (SCREENSHOTS && group === row) await page.screenshot({ path: join(SCREENSHOTS, 'console-overview.png'), fullPage: true });
      await group.locator('[data-action="confirm-replay"]').click();
      await page.locator('#notice').filter({ hasText: 'Replayed 1 entries.' }).waitFor();
    }
    for (const id of withdrawals) await settled(id, 'completed');
    await waitFor(async () => Number(await tile(page, 'dead_letter').textContent()) === deadBefore - 2, 'the dead-letter tile to count two fewer');
    expect(errors).toEqual([]);
  });

  it('shows a payload and an error holding <script> and <img onerror> as text, and runs none of it', async () => {
    const account = `acc-x-${run}`;
    await settled(await send('bank.open-account', { accountId: account, owner: '<img src=x onerror="window.__xss = 1">' }), 'completed');
    const duplicate = await send('bank.open-account', { accountId: account, owner: '<script>window.__xss = 2</script>' });
    await settled(duplicate, 'dead_letter');

    const { page, errors } = await openConsole(`?payload.accountId=${account}&status=dead_letter`);
    await expectRows(page, [duplicate]);
    await expect(page.locator(`#entries tr[data-id="${duplicate}"] td.error`).textContent()).resolves.toContain('<img src=x onerror="window.__xss = 1">');
    await page.locator(`#entries tr[data-id="${duplicate}"]`).click();
    await page.locator('#entry-payload').filter({ hasText: '<script>window.__xss = 2</script>' }).waitFor();
    await expect(page.locator('[data-fact="last error"]').textContent()).resolves.toContain('onerror=');
    expect(await page.locator('#entry img, #entry script, #entries img, #entries script').count()).toBe(0);
    expect(await page.evaluate(() => (globalThis as unknown as BrowserGlobals).__xss)).toBeUndefined();
    expect(errors).toEqual([]);
  });

  it('refreshes itself: a dead letter that arrives while the page is open shows up', async () => {
    const account = `acc-r-${run}`;
    await settled(await send('bank.open-account', { accountId: account, owner: 'Refresh' }), 'completed');
    const { page, errors } = await openConsole();
    await tile(page, 'dead_letter').waitFor();
    const before = Number(await tile(page, 'dead_letter').textContent());
    await settled(await send('bank.withdraw', { accountId: account, amount: 77 }), 'dead_letter');
    // No reload, no click: the page's own refresh (every 5 s) brings it.
    await waitFor(async () => Number(await tile(page, 'dead_letter').textContent()) === before + 1, 'the tile to count the new dead letter', 15_000);
    await page.locator('#entries td.error').filter({ hasText: `Insufficient funds in ${account}` }).waitFor();
    expect(errors).toEqual([]);
  });

  it('pages through a long list with Next page', async () => {
    const owner = `Paging ${run}`;
    const results = await app.get(InboxService).receiveMany(
      Array.from({ length: 60 }, (_, n) => ({ messageId: `browser-${run}-page-${n}`, commandType: 'bank.open-account', payload: { accountId: `acc-p${run}-${n}`, owner } })),
    );
    expect(results.every((result) => result.status === 'new')).toBe(true);
    const { page, errors } = await openConsole(`?commandType=bank.open-account&payload.owner=${encodeURIComponent(owner)}`);
    await waitFor(async () => (await page.locator('#entries tbody tr').count()) === 50, 'the first page of 50');
    await page.locator('#next-page').click();
    await waitFor(async () => (await page.locator('#entries tbody tr').count()) === 60, 'the second page appended');
    expect(await page.locator('#next-page').isVisible()).toBe(false);
    const ids = await page.locator('#entries tbody tr').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-id')));
    expect(new Set(ids).size).toBe(60);
    expect(errors).toEqual([]);
  });

  it('asks for a token when the API refuses the page', async () => {
    const { page } = await openConsole('', null);
    await page.locator('#notice').filter({ hasText: 'Not allowed' }).waitFor();
    expect(await page.locator('#tiles .tile').count()).toBe(0);
  });

  /** The list shows exactly these entries. */
  async function expectRows(page: Page, ids: string[]): Promise<void> {
    await waitFor(async () => {
      const shown = await page.locator('#entries tbody tr').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-id')));
      return JSON.stringify(shown) === JSON.stringify(ids);
    }, `the list to show ${ids.join(', ')}`);
  }
});
