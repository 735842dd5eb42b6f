// Jest in native ESM mode (see the `jest` script: --experimental-vm-modules); @swc/jest strips
// types. Type checking is `npm run typecheck`, a step of its own.
export default {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: {
    '^.+\\.ts$': [
      '@swc/jest',
      { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'es6' } },
    ],
  },
  transformIgnorePatterns: ['/node_modules/(?!@noble/)'],
  reporters: ['default', '<rootDir>/test/support/summary-reporter.cjs'],
  // One hang guard for every test and hook: long enough that a slow or busy machine never trips it
  // (a test's own waits take their timing from its scenario), short enough that a real hang
  // ends within CI's limit.
  testTimeout: 600000,
};
