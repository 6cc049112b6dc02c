// Lint: typescript-eslint's type-checked rules on the extension and its tests; the recommended
// JavaScript rules on the end-to-end driver.
import js from "@eslint/js";
import tseslint from "typescript-eslint";
import globals from "globals";

export default tseslint.config(
  // Build output (the esbuild bundle in dist/, tsc in out/) is not source.
  { ignores: ["out/**", "dist/**", "node_modules/**", "*.vsix", "test/e2e/node_modules/**", "test/e2e/artifacts/**"] },
  js.configs.recommended,
  {
    files: ["**/*.ts"],
    extends: [tseslint.configs.strictTypeChecked],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      "@typescript-eslint/restrict-template-expressions": ["error", { allowNumber: true }],
    },
  },
  {
    // node:test's test() returns a promise that the runner awaits.
    files: ["test/unit/**/*.ts"],
    rules: { "@typescript-eslint/no-floating-promises": "off" },
  },
  {
    files: ["**/*.mjs"],
    // page.evaluate() bodies run in the browser.
    languageOptions: { globals: { ...globals.node, ...globals.browser } },
  },
);
