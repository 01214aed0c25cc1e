/** src/builder: Dockerfile -> typed instructions -> stage graph -> cached steps -> image. */
export * from './lex.js';
export * from './parser.js';
export * from './instructions.js';
export * from './dockerfile.js';
export * from './context.js';
export * from './copyfiles.js';
export * from './cache.js';
export * from './store.js';
export * from './image.js';
export { build, findDockerfile, type BuildOptions, type BuildResult } from './build.js';
export { commitImage, parseOutput, type OutputSpec, type CommitOptions } from './commit.js';
export { StageExecutor, type ExecOptions, type StageResult } from './executor.js';
export { parseMount, runArgv, type MountSpec } from './run-step.js';
