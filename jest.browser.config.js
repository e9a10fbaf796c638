/** @type {import('jest').Config} */
const base = require('./jest.config.js');

/** The console in a real Chromium: `npm run test:browser` (see test/browser/). */
module.exports = {
  ...base,
  roots: ['<rootDir>/test/browser'],
  testRegex: '\\.browser-spec\\.ts$',
  globalSetup: '<rootDir>/test/browser/global-setup.mjs',
  maxWorkers: 1,
  randomize: true,
  reporters: ['default'],
};
