/** Signing, verification and key handling (cosign-compatible). */
export * from './keys.js';
export * from './payload.js';
export * from './password.js';
export * from './verify.js';
export * from './repo.js';
export * from './attachments.js';
export * from './check.js';
export * from './hooks.js';
