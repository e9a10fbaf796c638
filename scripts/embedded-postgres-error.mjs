/**
 * Why the embedded PostgreSQL cannot run here, in one sentence that ends with what to do instead.
 * The stack is left out: the message is for whoever ran `npm test` or `npm start`, and the
 * frames of these scripts would not help them.
 */
export class EmbeddedPostgresError extends Error {
  constructor(reason, options) {
    super(
      `Cannot start the embedded PostgreSQL: ${reason}. Set DATABASE_URL to a PostgreSQL server you run ` +
        '(for example postgres://postgres@127.0.0.1:5432/test; the user needs CREATEDB) and run the command again.',
      options,
    );
    this.name = 'EmbeddedPostgresError';
    this.stack = `${this.name}: ${this.message}`;
  }
}
