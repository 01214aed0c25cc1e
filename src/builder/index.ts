/** src/builder: Dockerfile -> typed instructions -> stage graph -> cached steps -> image. */
export * from './lex.js';
export * from './parser.js';
export * from './instructions.js';
export * from './dockerfile.js';
export * from './context.js';
export * from './copyfiles.js';
export * from './cache.js';
