import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

const ROOT = join(__dirname, '..', '..');

/** Registers the console in a fresh process, with `@nestjs/swagger` present or made unfindable. */
function registerConsole(hideSwagger: boolean): { controllers: number; tagged: boolean } {
  const script = `
    const Module = require('node:module');
    const resolve = Module._resolveFilename;
    if (${hideSwagger}) Module._resolveFilename = function (request, ...rest) {
      if (request === '@nestjs/swagger' || request.startsWith('@nestjs/swagger/')) {
        throw Object.assign(new Error("Cannot find module '" + request + "'"), { code: 'MODULE_NOT_FOUND' });
      }
      return resolve.call(this, request, ...rest);
    };
    require('reflect-metadata');
    const { InboxAdminModule } = require('./lib/index.ts');
    const registered = InboxAdminModule.register({ unprotected: true });
    const tagged = registered.controllers.some((controller) => Reflect.getMetadataKeys(controller).some((key) => String(key).startsWith('swagger/')));
    process.stdout.write(JSON.stringify({ controllers: registered.controllers.length, tagged }));
  `;
  return JSON.parse(execFileSync(process.execPath, ['-r', './scripts/register-ts.cjs', '-e', script], { cwd: ROOT, encoding: 'utf8' }));
}

describe('the console and @nestjs/swagger (an optional peer)', () => {
  it('registers without it, describing nothing', () => {
    expect(registerConsole(true)).toEqual({ controllers: 2, tagged: false });
  });

  it('describes its API with it', () => {
    expect(registerConsole(false)).toEqual({ controllers: 2, tagged: true });
  });
});
