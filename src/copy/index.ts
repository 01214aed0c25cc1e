/** src/copy: transports, the copy/sync engine, signing and policy. */
export * from './types.js';
export * from './sign/index.js';
export * from './policy.js';
// --- registry client + docker transport (client engineer) ---
export * from './registry/index.js';
export { dockerTransport, DockerImageName, DockerSource, DockerDestination, parseDockerName, dockerClient } from './transports/docker.js';
