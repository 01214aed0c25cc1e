/** src/copy: transports, the copy/sync engine, signing and policy. */
export * from './types.js';
export * from './sign/index.js';
export * from './policy.js';
