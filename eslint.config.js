import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// The dashboard page (dashboard/src) runs in the browser: its globals, and no Node ones.
const browserGlobals = Object.fromEntries(
  [
    'window', 'document', 'location', 'history', 'navigator', 'console', 'fetch', 'EventSource', 'MessageEvent',
    'Event', 'URL', 'URLSearchParams', 'ResizeObserver', 'HTMLElement', 'HTMLElementTagNameMap', 'Element', 'Node',
    'setTimeout', 'clearTimeout', 'requestAnimationFrame', 'matchMedia', 'devicePixelRatio',
  ].map((g) => [g, 'readonly']),
);

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'shared/gen/**', 'test-artifacts/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
      eqeqeq: ['error', 'always'],
    },
  },
  {
    files: ['dashboard/src/**/*.ts'],
    languageOptions: { globals: { ...browserGlobals, process: 'off', Buffer: 'off' } },
  },
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { module: 'writable', require: 'readonly' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
