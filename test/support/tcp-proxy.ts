import { createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy in front of PostgreSQL that a spec can break on purpose:
 * `forward` passes traffic, `refuse` drops every connection at once (a server that is down),
 * `blackhole` accepts connections and swallows their bytes (a partitioned network).
 */
export class TcpProxy {
  mode: 'forward' | 'refuse' | 'blackhole' = 'forward';
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  private readonly pairs = new Set<[Socket, Socket]>();
  /** Client bytes that, once seen, make the proxy swallow the server's answer and cut the connection. */
  private dropAnswerTo?: Buffer;
  /** Client bytes that, once seen, are held back with what follows them until `until` settles. */
  private holdFor?: { marker: Buffer; until: Promise<unknown> };
  /** Requests held back so far (see holdOnce). */
  heldRequests = 0;
  /** Answers swallowed so far (see dropAnswerOnce). */
  droppedAnswers = 0;
  /** New connections still to be ended by the server right after their setup (see terminateAfterStartup). */
  private terminations?: { left: number; terminate: (pid: number) => Promise<unknown> };
  /** Connections the server ended right after their setup so far. */
  terminatedAtStartup = 0;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  /** Starts listening on a free loopback port and returns the URL with host and port replaced. */
  async start(targetUrl: string): Promise<string> {
    this.server = createServer((client) => this.accept(client));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    const url = new URL(targetUrl);
    url.hostname = '127.0.0.1';
    url.port = String((this.server.address() as { port: number }).port);
    return url.toString();
  }

  /**
   * Switches mode for new connections. `refuse` also cuts every open connection (the server went
   * away); `blackhole` keeps them open but stops passing bytes (the network went silent).
   */
  set(mode: TcpProxy['mode']): void {
    this.mode = mode;
    if (mode === 'refuse') for (const socket of this.sockets) socket.destroy();
    // Forwarding checks the pair is still known: forgetting them silences the open connections.
    if (mode === 'blackhole') this.pairs.clear();
  }

  /**
   * The next time a client sends bytes containing `marker` (a prepared statement's name, say), the
   * proxy passes the request on, lets the server run it to its end (its ReadyForQuery, so an
   * autocommitted statement has committed), swallows the whole answer and cuts both sides: the
   * server did the work, the client never hears of it — a lost acknowledgement.
   */
  dropAnswerOnce(marker: string): void {
    this.dropAnswerTo = Buffer.from(marker);
  }

  /**
   * The next time a client sends bytes containing `marker`, the proxy holds them, and whatever that
   * client sends after them, until `until` settles, then passes them on in order: a statement made
   * to wait for another session's work, whichever session the server would let go first.
   */
  holdOnce(marker: string, until: Promise<unknown>): void {
    this.holdFor = { marker: Buffer.from(marker), until };
  }

  /**
   * The next `count` new connections are ended by the server the moment they are set up, and the
   * client reads both in one go: the proxy holds the server's answer to the startup until its
   * ReadyForQuery, has `terminate` end that backend (its pid is in the answer's BackendKeyData),
   * and passes the answer on together with the server's 57P01 error. What a client sees when
   * PostgreSQL shuts down (or pg_terminate_backend runs) just as it connects, and is slow to read.
   */
  terminateAfterStartup(count: number, terminate: (pid: number) => Promise<unknown>): void {
    this.terminations = count > 0 ? { left: count, terminate } : undefined;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private accept(client: Socket): void {
    this.track(client);
    if (this.mode === 'refuse') return void client.destroy();
    if (this.mode === 'blackhole') return void client.resume();
    const upstream = createConnection(this.targetPort, this.targetHost);
    this.track(upstream);
    const pair: [Socket, Socket] = [client, upstream];
    this.pairs.add(pair);
    let swallowing: Buffer | undefined;
    // The startup answer held back (see terminateAfterStartup), until the server's error follows it.
    let held: { bytes: Buffer; authenticated: boolean; terminating: boolean; terminate: (pid: number) => Promise<unknown> } | undefined;
    if (this.terminations) {
      held = { bytes: Buffer.alloc(0), authenticated: false, terminating: false, terminate: this.terminations.terminate };
      if (--this.terminations.left === 0) this.terminations = undefined;
    }
    // This client's bytes held back, in order (see holdOnce).
    let holding: Buffer[] | undefined;
    client.on('data', (chunk: Buffer) => {
      if (!this.pairs.has(pair)) return;
      if (holding) return void holding.push(chunk);
      if (this.holdFor && chunk.includes(this.holdFor.marker)) {
        const { until } = this.holdFor;
        this.holdFor = undefined;
        this.heldRequests++;
        holding = [chunk];
        const passOn = () => {
          const held = holding!;
          holding = undefined;
          if (this.pairs.has(pair)) for (const bytes of held) upstream.write(bytes);
        };
        return void until.then(passOn, passOn);
      }
      if (this.dropAnswerTo && chunk.includes(this.dropAnswerTo)) {
        this.dropAnswerTo = undefined;
        swallowing = Buffer.alloc(0);
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!this.pairs.has(pair)) return;
      if (held) {
        held.bytes = Buffer.concat([held.bytes, chunk]);
        if (!held.authenticated) {
          // A password exchange passes through (the client has to answer it); from AuthenticationOk
          // ('R', code 0) on, the answer is held.
          let passed = 0;
          for (const message of messageTypes(held.bytes)) {
            if (message.type === 0x52 && held.bytes.readInt32BE(message.offset + 5) === 0) {
              held.authenticated = true;
              break;
            }
            passed = message.offset + 1 + held.bytes.readInt32BE(message.offset + 1);
          }
          if (passed > 0) {
            client.write(held.bytes.subarray(0, passed));
            held.bytes = held.bytes.subarray(passed);
          }
          if (!held.authenticated) return;
        }
        const types = messageTypes(held.bytes);
        const ready = types.findIndex((message) => message.type === 0x5a);
        if (ready === -1) return;
        if (!held.terminating) {
          held.terminating = true;
          const keyData = types.find((message) => message.type === 0x4b);
          void held.terminate(held.bytes.readInt32BE(keyData!.offset + 5));
          return;
        }
        if (!types.slice(ready + 1).some((message) => message.type === 0x45)) return;
        this.terminatedAtStartup++;
        const bytes = held.bytes;
        held = undefined;
        return void client.write(bytes);
      }
      if (!swallowing) return void client.write(chunk);
      swallowing = Buffer.concat([swallowing, chunk]);
      // ReadyForQuery ('Z', length 5, status) ends the answer: the statement has committed by now.
      const tail = swallowing.subarray(-6);
      if (tail.length === 6 && tail[0] === 0x5a && tail.readInt32BE(1) === 5) {
        this.droppedAnswers++;
        client.destroy();
        upstream.destroy();
      }
    });
    const closeBoth = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', closeBoth).on('close', closeBoth);
    upstream.on('error', closeBoth).on('close', closeBoth);
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
  }
}

/** The complete backend messages at the start of `bytes`: type byte and offset of each. */
function messageTypes(bytes: Buffer): Array<{ type: number; offset: number }> {
  const messages: Array<{ type: number; offset: number }> = [];
  for (let offset = 0; offset + 5 <= bytes.length; ) {
    const end = offset + 1 + bytes.readInt32BE(offset + 1);
    if (end > bytes.length) break;
    messages.push({ type: bytes[offset], offset });
    offset = end;
  }
  return messages;
}

/** Proxy for the server behind `url`. */
export function proxyFor(url: string): TcpProxy {
  const parsed = new URL(url);
  return new TcpProxy(parsed.hostname, Number(parsed.port || 5432));
}
