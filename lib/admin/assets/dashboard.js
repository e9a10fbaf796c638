// @ts-check
// The inbox console's page: plain DOM, no framework, no build step. Everything the API returns is
// written with textContent, never as HTML: payloads and errors come from outside.

const base = document.body.dataset.base ?? '';
const REFRESH_MS = 5000;
const STATUSES = ['pending', 'processing', 'failed', 'dead_letter', 'completed'];
const FILTERS = ['status', 'commandType', 'deadLetterReason', 'errorContains', 'errorFingerprint', 'includeDiscarded', 'receivedAfter', 'receivedBefore'];
/** The filters the form edits; the others in the URL (a group's fingerprint, say) are kept as they are. */
const FORM_FILTERS = ['status', 'commandType', 'errorContains', 'includeDiscarded'];

let token = sessionStorage.getItem('inbox-admin-token');
let readOnly = false;
/** The `after` of the next page of the list, null on the last. */
let nextPage = /** @type {string | null} */ (null);
/** Pages of the list shown beyond the first: auto-refresh would fold them back. */
let morePages = 0;
/** The list and entry requests in flight: a newer one cancels its kind's, so that an older answer never lands over a newer one. */
const inFlight = /** @type {Record<'list' | 'entry', AbortController | undefined>} */ ({ list: undefined, entry: undefined });

class ApiError extends Error {
  /** @param {number} status @param {any} body */
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** @param {string} method @param {string} path @param {unknown} [body] @param {AbortSignal} [signal] */
async function call(method, path, body, signal) {
  /** @type {Record<string, string>} */
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  // Every change is JSON with the console's header: what a cross-site form cannot send.
  if (method !== 'GET') {
    headers['content-type'] = 'application/json';
    headers['x-inbox-console'] = '1';
  }
  const response = await fetch(`${base}/api/${path}`, { method, headers, credentials: 'same-origin', body: method === 'GET' ? undefined : JSON.stringify(body ?? {}), signal });
  const json = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

/**
 * GET `path` as the only request of its kind in flight; undefined when a newer one took its place.
 * @param {'list' | 'entry'} kind @param {string} path
 */
async function latest(kind, path) {
  const request = new AbortController();
  inFlight[kind]?.abort();
  inFlight[kind] = request;
  try {
    const answer = await call('GET', path, undefined, request.signal);
    return request.signal.aborted ? undefined : answer;
  } catch (error) {
    if (request.signal.aborted) return undefined;
    throw error;
  }
}

/**
 * An element with its text children (strings become text nodes, never markup).
 * @param {string} tag @param {Record<string, any>} [props] @param {Array<Node | string | number | null | undefined>} children
 */
function el(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === 'onclick') element.addEventListener('click', value);
    else if (name === 'class') element.className = value;
    else element.setAttribute(name, String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) element.append(typeof child === 'object' ? child : String(child));
  return element;
}

/** @param {string} id */
const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** @param {string} text @param {boolean} [isError] */
function notify(text, isError = false) {
  const notice = byId('notice');
  notice.textContent = text;
  notice.className = isError ? 'error' : '';
  notice.hidden = false;
}

/** @param {unknown} error */
function reportError(error) {
  if (error instanceof ApiError && (error.status === 401 || error.status === 403) && !(error.body?.message ?? '').includes('read-only')) {
    notify('Not allowed. Give the token your application expects (Token…), or sign in as it requires.', true);
  } else {
    notify(error instanceof Error ? error.message : String(error), true);
  }
}

/** @param {string | null} iso */
const time = (iso) => (iso ? new Date(iso).toLocaleString() : '');

/** @param {number} ms */
function age(ms) {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120_000) return `${Math.round(ms / 1000)} s`;
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)} min`;
  return `${Math.round(ms / 3_600_000)} h`;
}

/** The list's filters, as the page's own URL holds them (shareable). */
function filtersFromUrl() {
  const params = new URLSearchParams(location.search);
  /** @type {Record<string, string>} */
  const filter = {};
  for (const [name, value] of params) if (value !== '' && (FILTERS.includes(name) || name.startsWith('payload.'))) filter[name] = value;
  return filter;
}

/** The URL's payload filter the form shows (its first), or null. */
function formPayloadField() {
  return Object.keys(filtersFromUrl()).find((name) => name.startsWith('payload.')) ?? null;
}

/** @param {Record<string, string>} params */
function go(params) {
  const search = new URLSearchParams(params).toString();
  history.pushState(null, '', `${location.pathname}${search ? `?${search}` : ''}`);
  showUrl();
}

/** What the URL now says: its filters in the form, its view on the page. */
function showUrl() {
  showFilters();
  void render();
}

async function renderTiles() {
  const stats = await call('GET', 'stats');
  const tiles = byId('tiles');
  tiles.replaceChildren(
    ...STATUSES.map((status) =>
      el('div', { class: `tile ${status}`, 'data-status': status }, el('span', {}, status === 'completed' ? 'completed (est.)' : status.replace('_', ' ')), el('b', {}, stats.entries[status])),
    ),
    el('div', { class: 'tile' }, el('span', {}, 'oldest due'), el('b', {}, age(stats.oldestDueAgeMs))),
  );
}

async function renderGroups() {
  const { groups } = await call('GET', 'dead-letter-groups');
  const body = /** @type {HTMLElement} */ (byId('groups').querySelector('tbody'));
  body.replaceChildren(
    ...groups.map((/** @type {any} */ group) => {
      const filter = { commandType: group.commandType, errorFingerprint: group.fingerprint };
      const actions = el('td', { class: 'group-actions' });
      const idle = () =>
        actions.replaceChildren(
          el('button', { type: 'button', onclick: () => go({ status: 'dead_letter', includeDiscarded: 'false', ...filter }) }, 'Show'),
          ...(readOnly ? [] : [bulkButton('replay', 'Replay…', filter, actions, idle), bulkButton('discard', 'Discard…', filter, actions, idle)]),
        );
      idle();
      return el('tr', { 'data-fingerprint': group.fingerprint }, el('td', {}, group.commandType), el('td', { class: 'fingerprint' }, group.fingerprint), el('td', { class: 'count' }, group.count), el('td', {}, time(group.lastAt)), actions);
    }),
  );
  byId('groups-empty').hidden = groups.length > 0;
}

/**
 * A bulk action in two steps: the dry run's count, then a confirmation that carries it (the API
 * refuses it when the group changed meanwhile).
 * @param {'replay' | 'discard'} action @param {string} label @param {Record<string, string>} filter @param {HTMLElement} cell @param {() => void} idle
 */
function bulkButton(action, label, filter, cell, idle) {
  return el('button', {
    type: 'button',
    onclick: async () => {
      try {
        const { matched } = await call('POST', `bulk/${action}`, { filter, dryRun: true });
        cell.replaceChildren(
          el('span', { class: 'confirm-text' }, `${action === 'replay' ? 'Replay' : 'Discard'} ${matched} entries?`),
          el('button', {
            type: 'button',
            'data-action': `confirm-${action}`,
            onclick: async () => {
              try {
                const result = await call('POST', `bulk/${action}`, { filter, expectedCount: matched, reason: 'from the console' });
                notify(`${action === 'replay' ? 'Replayed' : 'Discarded'} ${result.changed} entries.`);
              } catch (error) {
                reportError(error);
              }
              await refresh();
            },
          }, `Confirm ${matched}`),
          el('button', { type: 'button', onclick: idle }, 'Cancel'),
        );
      } catch (error) {
        reportError(error);
      }
    },
  }, label);
}

async function renderBlocked() {
  const { keys } = await call('GET', 'blocked-keys');
  const box = byId('blocked');
  box.hidden = keys.length === 0;
  /** @type {HTMLElement} */ (box.querySelector('tbody')).replaceChildren(
    ...keys.map((/** @type {any} */ key) =>
      el('tr', { onclick: () => go({ entry: key.blockedBy.id }) }, el('td', {}, key.orderingKey), el('td', {}, `${key.blockedBy.commandType} ${key.blockedBy.messageId}`), el('td', {}, key.waiting)),
    ),
  );
}

/** @param {boolean} [more] the next page, appended */
async function renderEntries(more = false) {
  const filter = filtersFromUrl();
  const query = new URLSearchParams({ ...filter, limit: '50', ...(more && nextPage ? { after: nextPage } : {}) });
  const answer = await latest('list', `entries?${query}`);
  if (!answer) return;
  const { entries, next } = answer;
  nextPage = next;
  morePages = more ? morePages + 1 : 0;
  const rows = entries.map((/** @type {any} */ entry) =>
    el('tr', { 'data-id': entry.id, onclick: () => go({ ...filtersFromUrl(), entry: entry.id }) },
      el('td', {}, time(entry.receivedAt)),
      el('td', {}, entry.commandType),
      el('td', { class: 'status' }, entry.discardedAt ? `${entry.status} (discarded)` : entry.status),
      el('td', {}, entry.messageId),
      el('td', { class: 'error' }, (entry.error ?? '').slice(0, 160)),
    ),
  );
  const body = /** @type {HTMLElement} */ (byId('entries').querySelector('tbody'));
  if (more) body.append(...rows);
  else body.replaceChildren(...rows);
  byId('next-page').hidden = next === null;
}

/**
 * The form shows what the URL says: when the page opens and when the URL changes, never when a
 * list arrives (the operator may have typed since it was asked for).
 */
function showFilters() {
  const filter = filtersFromUrl();
  const form = /** @type {HTMLFormElement} */ (byId('filters'));
  for (const name of ['status', 'commandType', 'errorContains']) /** @type {HTMLInputElement} */ (form.elements.namedItem(name)).value = filter[name] ?? '';
  const payload = Object.entries(filter).find(([name]) => name.startsWith('payload.'));
  /** @type {HTMLInputElement} */ (form.elements.namedItem('payload')).value = payload ? `${payload[0].slice('payload.'.length)}=${payload[1]}` : '';
  /** @type {HTMLInputElement} */ (form.elements.namedItem('includeDiscarded')).checked = filter.includeDiscarded === 'false';
}

/** @param {string} id */
async function renderEntry(id) {
  const answer = await latest('entry', `entries/${encodeURIComponent(id)}`);
  if (!answer) return;
  const { entry, history } = answer;
  byId('entry-title').textContent = `${entry.commandType} · ${entry.messageId}`;
  const facts = [
    ['id', entry.id],
    ['status', entry.discardedAt ? `${entry.status} (discarded ${time(entry.discardedAt)})` : entry.status],
    ['dead-letter reason', entry.deadLetterReason],
    ['failed attempts', entry.retryCount],
    ['ordering key', entry.orderingKey],
    ['received', time(entry.receivedAt)],
    ['correlation id', entry.correlationId],
    ['last error', entry.error],
  ].filter(([, value]) => value !== null && value !== undefined && value !== '');
  byId('entry-facts').replaceChildren(...facts.flatMap(([name, value]) => [el('dt', {}, name), el('dd', { 'data-fact': name }, value)]));
  byId('entry-payload').textContent = entry.payload === null ? '(removed by retention)' : JSON.stringify(entry.payload, null, 2);
  byId('timeline').replaceChildren(
    ...history.map((/** @type {any} */ record) =>
      el('li', {},
        el('b', {}, `${record.event}${record.attempt ? ` #${record.attempt}` : ''}${record.outcome ? ` → ${record.outcome}` : ''}`),
        ` ${time(record.recordedAt)}`,
        record.durationMs !== null ? ` (${record.durationMs} ms)` : '',
        record.actor ? ` by ${record.actor}` : '',
        record.errorClass || record.errorMessage ? el('div', { class: 'error' }, `${record.errorClass ?? ''}: ${record.errorMessage ?? ''}`) : null,
        record.reason ? el('div', { class: 'muted' }, record.reason) : null,
      ),
    ),
  );
  const replayable = entry.status === 'dead_letter' ? !entry.discardedAt : entry.status === 'failed';
  byId('entry-actions').hidden = readOnly;
  byId('replay-open').hidden = !replayable;
  byId('discard').hidden = entry.status !== 'dead_letter' || Boolean(entry.discardedAt);
  byId('dead-letter').hidden = !['pending', 'failed'].includes(entry.status);
  const form = byId('replay-form');
  form.hidden = true;
  const shown = JSON.stringify(entry.payload ?? {}, null, 2);
  /** @type {HTMLTextAreaElement} */ (byId('replay-payload')).value = shown;
  form.dataset.shown = shown;
  byId('replay-errors').replaceChildren();
  form.dataset.id = entry.id;
}

async function refresh() {
  try {
    await Promise.all([renderTiles(), renderGroups(), renderBlocked(), renderEntries()]);
  } catch (error) {
    reportError(error);
  }
}

async function render() {
  const id = new URLSearchParams(location.search).get('entry');
  byId('overview').hidden = id !== null;
  byId('entry').hidden = id === null;
  try {
    if (id !== null) await renderEntry(id);
    else await refresh();
  } catch (error) {
    reportError(error);
  }
}

/** @param {string} action @param {string} label */
async function entryAction(action, label) {
  const id = /** @type {string} */ (byId('replay-form').dataset.id);
  const reason = prompt(`${label}: why? (kept in the history)`);
  if (reason === null) return; // cancelled
  try {
    await call('POST', `entries/${encodeURIComponent(id)}/${action}`, { reason: reason.trim() || undefined });
    notify(`${label}: done.`);
  } catch (error) {
    reportError(error);
  }
  await render();
}

function wire() {
  byId('filters').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = /** @type {HTMLFormElement} */ (event.target);
    const data = new FormData(form);
    // What the form does not edit stays as the URL has it.
    /** @type {Record<string, string>} */
    const params = Object.fromEntries(Object.entries(filtersFromUrl()).filter(([name]) => !FORM_FILTERS.includes(name) && name !== formPayloadField()));
    for (const name of ['status', 'commandType', 'errorContains']) {
      const value = String(data.get(name) ?? '').trim();
      if (value) params[name] = value;
    }
    const payload = String(data.get('payload') ?? '').trim();
    const split = payload.indexOf('=');
    if (split > 0) params[`payload.${payload.slice(0, split).trim()}`] = payload.slice(split + 1).trim();
    if (data.get('includeDiscarded')) params.includeDiscarded = 'false';
    go(params);
  });
  byId('filters').addEventListener('reset', () => setTimeout(() => go({})));
  byId('next-page').addEventListener('click', () => void renderEntries(true).catch(reportError));
  byId('back').addEventListener('click', (event) => {
    event.preventDefault();
    const params = filtersFromUrl();
    go(params);
  });
  byId('replay-open').addEventListener('click', () => {
    byId('replay-form').hidden = false;
    byId('replay-payload').focus();
  });
  byId('replay-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = byId('replay-form');
    const errors = byId('replay-errors');
    errors.replaceChildren();
    const text = /** @type {HTMLTextAreaElement} */ (byId('replay-payload')).value;
    // Unchanged: replayed as stored (what was shown may hold masks, or numbers JSON would round).
    let payload;
    if (text !== form.dataset.shown) {
      try {
        payload = JSON.parse(text);
      } catch (error) {
        errors.append(el('li', {}, `Not JSON: ${error instanceof Error ? error.message : String(error)}`));
        return;
      }
    }
    const reason = /** @type {HTMLInputElement} */ (byId('replay-reason')).value.trim() || undefined;
    try {
      await call('POST', `entries/${encodeURIComponent(String(form.dataset.id))}/replay`, { payload, reason });
      notify('Replayed: the entry is pending again.');
      await render();
    } catch (error) {
      const failures = error instanceof ApiError && Array.isArray(error.body?.failures) ? error.body.failures : [error instanceof Error ? error.message : String(error)];
      errors.append(...failures.map((/** @type {string} */ failure) => el('li', {}, failure)));
    }
  });
  byId('discard').addEventListener('click', () => void entryAction('discard', 'Discard'));
  byId('dead-letter').addEventListener('click', () => void entryAction('dead-letter', 'Dead-letter'));
  byId('token-button').addEventListener('click', () => {
    const given = prompt('Token for the console (kept for this tab only)', token ?? '');
    if (given === null) return;
    token = given.trim() || null;
    if (token) sessionStorage.setItem('inbox-admin-token', token);
    else sessionStorage.removeItem('inbox-admin-token');
    void start();
  });
  window.addEventListener('popstate', showUrl);
  setInterval(() => {
    const auto = /** @type {HTMLInputElement} */ (byId('auto-refresh'));
    // Not while the operator is in the middle of something the refresh would wipe.
    const busy = morePages > 0 || document.querySelector('[data-action^="confirm-"]') !== null;
    if (auto.checked && !busy && !byId('overview').hidden && !document.hidden) void refresh();
  }, REFRESH_MS);
}

async function start() {
  try {
    ({ readOnly } = await call('GET', 'meta'));
    byId('mode').hidden = !readOnly;
    byId('notice').hidden = true;
  } catch (error) {
    reportError(error);
    return;
  }
  await render();
}

wire();
showFilters();
void start();
