/** The registry client (undici), credentials (auth.json) and registries.conf. */
export * from './auth.js';
export * from './client.js';
export * from './credentials.js';
export * from './registries.js';
