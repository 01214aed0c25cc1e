/** src/ns: running a process in a build container (see types.ts for the Runner interface). */
export * from './types.js';
export { BuiltinRunner } from './builtin.js';
export { helperPath } from './helper.js';
export { resolveUser, type ExecUser } from './user.js';
export { resolveInRoot } from './inroot.js';
export { DEFAULT_CAPS, capMask } from './caps.js';
export { createRunner, checkResult } from './runner.js';
